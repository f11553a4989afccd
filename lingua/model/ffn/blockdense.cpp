// BlockDense FFN (structured FFN layers, SPEC §3; model.ffn=blockdense): SwiGLU whose two linears
// are each a block-diagonal factor followed by a dense one (Wei et al. 2024), with k =
// model.structured.nblocks blocks and r = model.structured.rank:
//   S = B blockdiag(A_0, ..., A_{k-1}),  A [k, r/k, in/k] ("<fc>.blocks.weight"), B [out, r]
//   ("<fc>.dense.weight"); fc1 = "w13" (in dim, out 2 hidden: (a, b) halves), fc2 = "w2".
// Forward keeps t = blockdiag(A) x [N, r] per linear. Layers not in model.structured.layers are
// dense SwiGLU. Init: fixed N(0, 0.02) or xavier N(0, 1 / fan_in) per factor; post_init ortho
// replaces each block of A, and B, by U V^T of its SVD. With one block this is LowRank.
#include <algorithm>

#include "lingua/model/ffn/structured.h"
#include "lingua/model/linear.h"
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& args);

namespace {

class BlockDenseLinear final : public StructuredLinear {
 public:
  BlockDenseLinear(const FfnBuildArgs& a, const std::string& name, int64_t out, int64_t in, const char* out_axis,
                   const char* in_axis)
      : out_(out), in_(in), k_(a.cfg.structured.nblocks), r_(a.cfg.structured.rank) {
    const bool ortho = a.cfg.structured.post_init == "ortho";
    ParamSpec blocks;
    blocks.name = a.prefix + name + ".blocks.weight";
    blocks.shape = {k_, r_ / k_, in / k_};
    blocks.axes = {"blocks", "rank", in_axis};
    blocks.init = structured_factor_init(a.cfg, in / k_);
    if (ortho) blocks.init = ortho_init(blocks.init, k_);
    ParamSpec dense;
    dense.name = a.prefix + name + ".dense.weight";
    dense.shape = {out, r_};
    dense.axes = {out_axis, "rank"};
    dense.init = structured_factor_init(a.cfg, r_);
    if (ortho) dense.init = ortho_init(dense.init, 1);
    a_ = FactorParam(a.store, blocks);
    bp_ = FactorParam(a.store, dense);
    b_ = Linear::shared(a.store, bp_.id);
  }

  void forward(const Tensor& x, const Tensor& y, const Tensor& residual, Arena& keep, Arena&) override {
    t_ = arena_tensor(keep, {x.size(0), r_}, x.dtype);
    blockdiag_forward(x, a_.compute(), t_);
    b_.forward(t_, y, residual);
  }
  void backward_input(const Tensor& dy, const Tensor& dx, Arena& scratch) override {
    dt_ = arena_tensor(scratch, {dy.size(0), r_}, dy.dtype);
    b_.backward_input(dy, dt_);
    b_.backward_weight(t_, dy);
    blockdiag_backward(Tensor(), a_.compute(), dt_, dx, Tensor());
  }
  void backward_weight(const Tensor& x, const Tensor&) override {
    const Tensor g = a_.grad();
    if (is_given(g)) blockdiag_backward(x, a_.compute(), dt_, Tensor(), g);
  }
  size_t saved_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * r_, act); }
  size_t scratch_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * r_, act); }
  int64_t matmul_params() const override { return r_ * (in_ / k_) + out_ * r_; }
  std::vector<double> dense() const override {
    const std::vector<double> a = a_.host(), b = bp_.host();
    const int64_t rb = r_ / k_, ib = in_ / k_;
    std::vector<double> s((size_t)(out_ * in_), 0.0);
    for (int64_t o = 0; o < out_; ++o)
      for (int64_t c = 0; c < k_; ++c)
        for (int64_t j = 0; j < rb; ++j) {
          const double bv = b[(size_t)(o * r_ + c * rb + j)];
          const double* arow = a.data() + (c * rb + j) * ib;
          double* srow = s.data() + o * in_ + c * ib;
          for (int64_t i = 0; i < ib; ++i) srow[i] += bv * arow[i];
        }
    return s;
  }

 private:
  int64_t out_, in_, k_, r_;
  FactorParam a_, bp_;
  Linear b_;  // over bp_
  Tensor t_, dt_;  // saved: blockdiag(A) x; pending from backward_input: dL/dt
};

}  // namespace

std::unique_ptr<FeedForward> make_blockdense_ffn(const FfnBuildArgs& a) {
  const std::vector<int> layers = structured_layers(a.cfg, "blockdense");
  if (!std::binary_search(layers.begin(), layers.end(), a.layer)) return make_swiglu_ffn(a);
  const int64_t H = a.dims.hidden, dim = a.dims.dim;
  check_divides_blocks(a.cfg, "blockdense", dim, "the model width dim");
  check_divides_blocks(a.cfg, "blockdense", H, "the FFN hidden width");
  check_divides_blocks(a.cfg, "blockdense", a.cfg.structured.rank, "model.structured.rank");
  auto fc1 = std::make_unique<BlockDenseLinear>(a, "w13", 2 * H, dim, "2hidden", "dim");
  auto fc2 = std::make_unique<BlockDenseLinear>(a, "w2", dim, H, "dim", "hidden");
  return std::make_unique<StructuredFfn>("blockdense", H, std::move(fc1), std::move(fc2));
}

void check_blockdense_config(const ModelConfig& c, const OptimConfig*) {
  check_structured_keys(c, "blockdense", true, true, "ortho");
}

}  // namespace lingua
