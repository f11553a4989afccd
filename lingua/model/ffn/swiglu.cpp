// Dense SwiGLU FFN (Llama): out = w2(silu(w1 x) * w3 x).
#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/linear.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {
namespace {

class SwiGluFfn final : public FeedForward {
 public:
  explicit SwiGluFfn(const FfnBuildArgs& a) : hidden_(a.dims.hidden) {
    const FfnInitStd init = ffn_init_std(a);
    const int64_t dim = a.dims.dim;
    // w1 and w3 stacked: both input projections are one matmul, [2 hidden, dim].
    w13_ = Linear(a.store, {ffn_weight_spec(a, "w1.weight", hidden_, dim, "hidden", "dim", init.in),
                            ffn_weight_spec(a, "w3.weight", hidden_, dim, "hidden", "dim", init.in)});
    w2_ = Linear(a.store, ffn_weight_spec(a, "w2.weight", dim, hidden_, "dim", "hidden", init.out));
  }

  void forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) override {
    const int64_t n = ctx.rows();
    Arena& sc = *ctx.scratch;
    size_t mark = sc.mark();
    ab_ = arena_tensor(forward_arena(ctx), {n, 2 * hidden_}, ctx.act);  // row n: (w1 x_n, w3 x_n)
    // g is not kept: backward recomputes it (see there).
    Tensor g = arena_tensor(sc, {n, hidden_}, ctx.act);
    w13_.forward(x, ab_);
    swiglu_forward_packed(ab_, g);
    w2_.forward(g, out, residual);
    sc.release_to(mark);
  }

  void backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) override {
    const int64_t n = ctx.rows();
    Arena& ar = *ctx.scratch;
    size_t mark = ar.mark();
    LINGUA_ASSERT(dout.dtype == ctx.act);
    // dg = dout W2; then one pass writes (da, db) over ab and the recomputed g = silu(a) * b over
    // dg (not kept from forward: saves [N, hidden] per layer for one extra write), which the W2
    // gradient reads.
    Tensor dg = arena_tensor(ar, {n, hidden_}, ctx.act);
    w2_.backward_input(dout, dg);
    swiglu_backward_packed(ab_, dg, ab_, dg);
    w2_.backward_weight(dg, dout);
    w13_.backward(x, ab_, dx);
    ar.release_to(mark);
  }

  size_t saved_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * 2 * hidden_, act); }
  size_t scratch_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * hidden_, act); }
  int64_t matmul_params() const override { return w13_.out() * w13_.in() + w2_.out() * w2_.in(); }
  const char* kind() const override { return "swiglu"; }

 private:
  int64_t hidden_;
  Linear w13_, w2_;
  Tensor ab_;  // saved: [N, 2 hidden], row n = (w1 x_n, w3 x_n)
};

}  // namespace

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& a) { return std::make_unique<SwiGluFfn>(a); }

}  // namespace lingua
