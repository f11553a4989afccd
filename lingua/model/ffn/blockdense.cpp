// BlockDense FFN (structured FFN layers, SPEC §3; model.ffn=blockdense): SwiGLU whose two linears
// are each a block-diagonal factor followed by a dense one (Wei et al. 2024), with k =
// model.structured.nblocks blocks and r = model.structured.rank:
//   S = B blockdiag(A_0, ..., A_{k-1}),  A [k, r/k, in/k] ("<fc>.blocks.weight"), B [out, r]
//   ("<fc>.dense.weight"); fc1 = "w13" (in dim, out 2 hidden: (a, b) halves), fc2 = "w2".
// Forward keeps t = blockdiag(A) x [N, r] per linear. Layers not in model.structured.layers are
// dense SwiGLU. Init: fixed N(0, 0.02) or xavier N(0, 1 / fan_in) per factor; post_init ortho
// replaces each block of A, and B, by U V^T of its SVD. With one block this is LowRank.
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
    a_ = FactorParam(a.store, structured_factor_spec(a, name + ".blocks.weight", {k_, r_ / k_, in / k_},
                                                     {"blocks", "rank", in_axis}));
    bp_ = FactorParam(a.store, structured_factor_spec(a, name + ".dense.weight", {out, r_}, {out_axis, "rank"}));
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
    return dense_times_blockdiag(bp_.host(), a_.host(), out_, k_, r_ / k_, in_);
  }

 private:
  int64_t out_, in_, k_, r_;
  FactorParam a_, bp_;
  Linear b_;  // over bp_
  Tensor t_, dt_;  // saved: blockdiag(A) x; pending from backward_input: dL/dt
};

}  // namespace

std::unique_ptr<FeedForward> make_blockdense_ffn(const FfnBuildArgs& a) {
  if (!is_structured_layer(a, "blockdense")) return make_swiglu_ffn(a);
  const int64_t H = a.dims.hidden, dim = a.dims.dim;
  check_divides_blocks(a.cfg, "blockdense", dim, "the model width dim");
  check_divides_blocks(a.cfg, "blockdense", H, "the FFN hidden width");
  check_divides_blocks(a.cfg, "blockdense", a.cfg.structured.rank, "model.structured.rank");
  auto fc1 = std::make_unique<BlockDenseLinear>(a, "w13", 2 * H, dim, "2hidden", "dim");
  auto fc2 = std::make_unique<BlockDenseLinear>(a, "w2", dim, H, "dim", "hidden");
  return std::make_unique<StructuredFfn>(a, "blockdense", std::move(fc1), std::move(fc2));
}

void check_blockdense_config(const ModelConfig& c, const OptimConfig*) {
  check_structured_keys(c, "blockdense", true, true, "ortho");
}

}  // namespace lingua
