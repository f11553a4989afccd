#pragma once
// What the structured FFN variants (SPEC §3: lowrank.cpp, blockdense.cpp, blockshuffle.cpp) share:
// the layers they apply to, their inits (fixed / xavier factors, post-inits svd and ortho through
// LAPACK), the StructuredLinear interface for one factored linear, and StructuredFfn: SwiGLU whose
// two linears are structured,
//   fc1 [2 hidden, dim]: (a, b) = fc1 x (a the first hidden outputs)     kept for backward
//   fc2 [dim, hidden]:   out = residual + fc2 (silu(a) * b)              g recomputed in backward
// Nothing outside lingua/model/ffn includes this header.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lingua/model/ffn/ffn.h"

namespace lingua {

// The layers whose FFN is structured when model.ffn is `kind` (model.structured.layers, default
// every layer but 0, as the original); checked against n_layers; empty for another kind.
std::vector<int> structured_layers(const ModelConfig& cfg, const char* kind);
// Whether the layer being built (args.layer) is one of them (the others are dense SwiGLU).
bool is_structured_layer(const FfnBuildArgs& args, const char* kind);

// The checks of a structured variant when model.ffn is `kind` (else none): the keys it needs are
// set (rank, nblocks), post_init is none or the one it supports, the layers are valid.
void check_structured_keys(const ModelConfig& cfg, const char* kind, bool needs_rank, bool needs_nblocks,
                           const char* post_init);
// "config key 'model.structured.nblocks' is k: ..." unless k divides `width` (named by `what`).
void check_divides_blocks(const ModelConfig& cfg, const char* kind, int64_t width, const char* what);

// A factor parameter `args.prefix + name` of `shape` ([rows, cols] or [blocks, rows, cols]) with
// the init model.structured.init asks for (fixed N(0, 0.02), xavier N(0, 1 / cols)), followed by
// post_init ortho when set (each [rows, cols] matrix replaced by U V^T of its SVD).
ParamSpec structured_factor_spec(const FfnBuildArgs& args, const std::string& name, std::vector<int64_t> shape,
                                 std::vector<std::string> axes);
// The values `init` gives a whole parameter `name` of `shape` (host, row-major).
std::vector<float> whole_init_values(const ParamInit& init, uint64_t seed, const std::string& name,
                                     const std::vector<int64_t>& shape);
// post_init ortho: `base`, then each of the `blocks` leading matrices [rows, cols] (shape [blocks,
// rows, cols], or [rows, cols] with blocks 1) replaced by U V^T of its thin SVD.
ParamInit ortho_init(ParamInit base, int64_t blocks);
// A = sqrt(S_r) V_r^T [r, in] and B = U_r sqrt(S_r) [out, r] (row-major) of W [out, in] (row-major).
struct SvdFactors {
  std::vector<double> a, b;
};
SvdFactors truncated_svd_factors(const std::vector<float>& w, int out, int in, int r);
// B blockdiag(A_0, ..., A_{k-1}) [out, in] (row-major) of B [out, k * rb] and A [k, rb, in / k]
// (k = 1: the low-rank product B A).
std::vector<double> dense_times_blockdiag(const std::vector<double>& b, const std::vector<double>& a, int64_t out,
                                          int64_t k, int64_t rb, int64_t in);

// A factor parameter of a structured linear: what matmuls read, its gradient, its host values.
struct FactorParam {
  ParamStore* store = nullptr;
  int id = -1;
  FactorParam() = default;
  FactorParam(ParamStore& s, ParamSpec spec) : store(&s), id(s.add(std::move(spec))) {}  // declares it
  FactorParam(ParamStore& s, int existing) : store(&s), id(existing) {}
  Tensor compute() const { return store->compute_param(id); }
  Tensor grad() const { return store->grad(id); }  // empty when frozen
  std::vector<double> host() const;                // whole values (an error for a split parameter)
};

// One structured linear y = S x, S [out, in] a product of factors it owns as parameters.
class StructuredLinear {
 public:
  virtual ~StructuredLinear() = default;
  // y [N, out] (ctx.act; f32 with a residual, which may be y) = S x (+ residual). x [N, in]
  // ctx.act. Keeps in `keep` what backward reads besides x; transient memory from `scratch`.
  virtual void forward(const Tensor& x, const Tensor& y, const Tensor& residual, Arena& keep, Arena& scratch) = 0;
  // dx [N, in] (f32 or ctx.act) = S^T dy, and every factor gradient that does not read x. What
  // backward_weight reads stays in `scratch`: release it after backward_weight.
  virtual void backward_input(const Tensor& dy, const Tensor& dx, Arena& scratch) = 0;
  // The gradient of the factor x multiplies (after backward_input, with the same dy).
  virtual void backward_weight(const Tensor& x, const Tensor& dy) = 0;
  // k > 0 when forward ends in a stride permutation that a consumer may fuse into its reads:
  // y = stride_permute(v, out / k) (output element a*k + c is v's element c*(out/k) + a); else 0.
  virtual int64_t output_shuffle() const { return 0; }
  // forward and backward_input without that last permutation (only when output_shuffle() > 0): v
  // [N, out] ctx.act written in place of y (no residual), dv (v's order) taken in place of dy;
  // backward_weight then gets dv.
  virtual void forward_unshuffled(const Tensor& x, const Tensor& v, Arena& keep, Arena& scratch);
  virtual void backward_input_unshuffled(const Tensor& dv, const Tensor& dx, Arena& scratch);
  virtual size_t saved_bytes(int64_t rows, DType act) const = 0;
  virtual size_t scratch_bytes(int64_t rows, DType act) const = 0;  // backward_input's (>= forward's)
  virtual int64_t matmul_params() const = 0;
  // S as a dense [out, in] row-major matrix, from the parameters' current values (host; whole
  // parameters only; for tests, the guide's init, pre-merge and dense export).
  virtual std::vector<double> dense() const = 0;
};

// A structured linear with a dense guide for self-guided training (self_guided.cpp): forward,
// backward and dense() of alpha W + (1 - alpha) S while the guide is present.
class GuidedStructuredLinear : public StructuredLinear {
 public:
  virtual void begin_step(int64_t step) = 0;  // FeedForward::begin_step: alpha, the draw, the drop
  virtual void set_training(bool training) = 0;  // forwards that do not train always run the guide
  virtual bool present() const = 0;  // the guide parameter exists (steps before max_step)
  virtual bool runs(bool training) const = 0;  // the guide takes part in a forward of this step
  virtual double alpha() const = 0;
  virtual int64_t guide_params() const = 0;  // out * in
};
// Wraps `inner`, the structured linear "<prefix><fc>" [out, in], with the guide
// "<prefix><fc>.guide.weight", declared now and placed after parameter `after` when added back.
std::unique_ptr<GuidedStructuredLinear> make_guided_linear(const FfnBuildArgs& args, const std::string& fc,
                                                           int64_t out, int64_t in, const char* out_axis,
                                                           const char* in_axis, int after,
                                                           std::unique_ptr<StructuredLinear> inner);

// SwiGLU over two structured linears (fc1 "w13" [2 hidden, dim], fc2 "w2" [dim, hidden]), each
// with a guide when model.structured.self_guided.mode is not none.
//
// Pre-merge: a forward that keeps nothing for backward, of at most
// model.structured.premerge_max_tokens rows (decoding; -1, the default: what was measured faster,
// see premerge_max_rows), multiplies by merged dense weights instead
// of the factors: 2 dense GEMMs in place of the 2-6 thin ones that cost as much at few rows. The
// merged weights (w13 [2 hidden, dim], w2 [dim, hidden], activation dtype) are kept beside the
// factors, made on the device by running each structured linear on the identity (whatever its
// structure: permutations, a guide's mixing) and transposing, and made again once the parameter
// values or the step (a guide's alpha) change.
class StructuredFfn final : public FeedForward {
 public:
  StructuredFfn(const FfnBuildArgs& args, const char* kind, std::unique_ptr<StructuredLinear> fc1,
                std::unique_ptr<StructuredLinear> fc2);
  void forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) override;
  void backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) override;
  size_t saved_bytes(int64_t rows, DType act) const override;
  size_t scratch_bytes(int64_t rows, DType act) const override;
  int64_t matmul_params() const override { return fc1_->matmul_params() + fc2_->matmul_params(); }
  const char* kind() const override { return kind_; }
  std::optional<DenseSwiGLU> dense_swiglu() const override;
  void begin_step(int64_t step) override;
  int64_t idle_params() const override;
  bool work_varies_per_step() const override;
  int64_t replayed_steps() const override;
  void add_step_metrics(std::map<std::string, double>& metrics) const override;
  const StructuredLinear& fc1() const { return *fc1_; }
  const StructuredLinear& fc2() const { return *fc2_; }
  // The merged weights as the last forward that used them saw them ([2 hidden, dim], [dim,
  // hidden]; empty before), and how many times they were made (tests).
  Tensor merged_w13() const { return merged_w13_; }
  Tensor merged_w2() const { return merged_w2_; }
  int merges() const { return merges_; }

 private:
  void merge(DType act);  // (re)makes the merged weights when stale
  // The dense forms of fc1 [2 hidden, dim] and fc2 [dim, hidden] into w13 and w2 (`act`, the store's device).
  void merge_into(DType act, const Tensor& w13, const Tensor& w2) const;
  const char* kind_;
  ParamStore* store_;
  int64_t dim_, hidden_;
  SelfGuidedConfig guided_;
  int64_t premerge_max_rows_;  // -1: auto (premerge_max_rows)
  int64_t premerge_max_rows(Device device) const;
  Arena merged_;
  Tensor merged_w13_, merged_w2_;
  uint64_t merged_epoch_ = 0;  // the store's values epoch they were made at (0: stale)
  int merges_ = 0;
  std::unique_ptr<StructuredLinear> fc1_, fc2_;
  GuidedStructuredLinear* guides_[2] = {nullptr, nullptr};  // fc1_, fc2_ when guided
  Tensor ab_;  // saved: fc1 x
};

}  // namespace lingua
