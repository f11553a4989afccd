// Dense SwiGLU FFN (Llama): out = w2(silu(w1 x) * w3 x).
#include <cmath>

#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {
namespace {

class SwiGluFfn final : public FeedForward {
 public:
  explicit SwiGluFfn(const FfnBuildArgs& a) : store_(a.store), dim_(a.dims.dim), hidden_(a.dims.hidden) {
    const FfnInitStd init = ffn_init_std(a);
    w1_ = a.store.add(a.prefix + "w1.weight", {hidden_, dim_}, {ParamInit::trunc_normal, init.in});
    w3_ = a.store.add(a.prefix + "w3.weight", {hidden_, dim_}, {ParamInit::trunc_normal, init.in});
    w2_ = a.store.add(a.prefix + "w2.weight", {dim_, hidden_}, {ParamInit::trunc_normal, init.out});
  }
  // w1 and w3 are adjacent in the store's flat buffers (declared one after the other): read as one
  // [2 hidden, dim] matrix, both input projections are one matmul.
  Tensor w13(const Tensor& w1) const {
    LINGUA_ASSERT(store_.info(w3_).offset == store_.info(w1_).offset + hidden_ * dim_);
    return Tensor(w1.data, {2 * hidden_, dim_}, w1.dtype, w1.device);
  }

  void forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) override {
    int64_t n = ctx.rows();
    Arena& sc = *ctx.scratch;
    size_t mark = sc.mark();
    ab_ = arena_tensor(forward_arena(ctx), {n, 2 * hidden_}, ctx.act);  // row n: (w1 x_n, w3 x_n)
    // g is not kept: backward recomputes it (see there).
    Tensor g = arena_tensor(sc, {n, hidden_}, ctx.act);
    linear_forward(x, w13(store_.compute_param(w1_)), ab_);
    swiglu_forward_packed(ab_, g);
    linear_forward(g, store_.compute_param(w2_), out, residual);
    sc.release_to(mark);
  }

  void backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) override {
    int64_t n = ctx.rows();
    Arena& ar = *ctx.scratch;
    size_t mark = ar.mark();
    LINGUA_ASSERT(dout.dtype == ctx.act);
    // dg = dout W2; then one pass writes (da, db) over ab and the recomputed g = silu(a) * b over
    // dg (not kept from forward: saves [N, hidden] per layer for one extra write), which the W2
    // gradient reads. x of the first call is unread (no dw asked).
    Tensor dg = arena_tensor(ar, {n, hidden_}, ctx.act);
    linear_backward(dg, store_.compute_param(w2_), dout, dg, Tensor());
    swiglu_backward_packed(ab_, dg, ab_, dg);
    linear_backward(dg, store_.compute_param(w2_), dout, Tensor(), store_.grad(w2_));
    linear_backward(x, w13(store_.compute_param(w1_)), ab_, dx, w13(store_.grad(w1_)));
    ar.release_to(mark);
  }

  size_t saved_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * 2 * hidden_, act); }
  size_t scratch_bytes(int64_t rows, DType act) const override {
    return arena_bytes(rows * hidden_, act);
  }
  int64_t matmul_params() const override { return 3LL * dim_ * hidden_; }

 private:
  ParamStore& store_;
  int64_t dim_, hidden_;
  int w1_, w2_, w3_;
  Tensor ab_;  // saved: [N, 2 hidden], row n = (w1 x_n, w3 x_n)
};

}  // namespace

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& a) { return std::make_unique<SwiGluFfn>(a); }

}  // namespace lingua
