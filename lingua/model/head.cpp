#include "lingua/model/head.h"

#include "lingua/model/block.h"
#include "lingua/model/probe_observer.h"
#include "lingua/ops/cross_entropy/cross_entropy.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"

namespace lingua {

LMHead::LMHead(ParamStore& store, const ModelDims& d, float init_std, int tied)
    : store_(store), dim_(d.dim), eps_(d.norm_eps), norm_(store.add(norm_weight_spec("norm.weight", d.dim))) {
  if (tied >= 0) {
    output_ = Linear::shared(store, tied);
    return;
  }
  ParamSpec out;
  out.name = "output.weight";
  out.shape = {d.vocab, d.dim};
  out.axes = {"vocab", "dim"};
  out.init = ParamInit::trunc_normal(init_std);
  output_ = Linear(store, std::move(out));
}

void LMHead::forward(const Tensor& x, const StepContext& ctx) {
  const int64_t N = x.size(0);
  xf_ = arena_tensor(*ctx.saved, {N, dim_}, ctx.act);
  rstd_ = arena_tensor(*ctx.saved, {N});
  rmsnorm_forward(x, store_.param(norm_), eps_, xf_, rstd_);
}

Tensor LMHead::loss_backward(const Tensor& targets, float loss_scale, double* loss_sum, bool accumulate,
                             const StepContext& ctx) {
  Tensor dxf = arena_tensor(*ctx.scratch, {xf_.size(0), dim_}, ctx.act);
  if (ProbeObserver* o = probe_observer()) {
    // The logits exist only inside the fused cross-entropy: made here for the probe's statistics
    // (their gradient is not recorded).
    const Tensor shape(nullptr, {xf_.size(0), output_.out()}, ctx.act, xf_.device);
    output_.forward(xf_, o->scratch_like(shape));
  }
  output_cross_entropy_sum(xf_, output_.compute_weight(), targets, Tensor(), loss_scale, dxf, output_.grad(), loss_sum,
                           accumulate);
  return dxf;
}

void LMHead::input_backward(const Tensor& x, const Tensor& dnorm, const Tensor& dx, const Tensor& dx_copy,
                           const StepContext& ctx) {
  Tensor dw = store_.grad(norm_);
  if (!dw.data) dw = arena_tensor(*ctx.scratch, {dim_});  // frozen: written, never read
  rmsnorm_backward(x, store_.param(norm_), rstd_, dnorm, dx, dw, false, dx_copy);
}

double LMHead::loss(const Tensor& targets, const Tensor& nll) const {
  return output_cross_entropy(xf_, output_.compute_weight(), targets, nll, 1.0f, Tensor(), Tensor());
}

void LMHead::logits(const Tensor& out) const { output_.forward(xf_, out); }

void LMHead::logits_of(const Tensor& x, const Tensor& out, const StepContext& ctx) const {
  Arena& scratch = *ctx.scratch;
  const size_t mark = scratch.mark();
  const int64_t n = x.size(0);
  Tensor xf = arena_tensor(scratch, {n, dim_}, ctx.act), rstd = arena_tensor(scratch, {n});
  rmsnorm_forward(x, store_.param(norm_), eps_, xf, rstd);
  output_.forward(xf, out);
  scratch.release_to(mark);
}

size_t LMHead::saved_bytes(int64_t rows, DType act) const { return arena_bytes(rows * dim_, act) + arena_bytes(rows); }

size_t LMHead::scratch_bytes(int64_t rows, DType act, bool training) const {
  if (!training) return arena_bytes(rows);  // per-row losses
  return arena_bytes(rows * dim_, act) + (store_.trainable(norm_) ? 0 : arena_bytes(dim_));
}

}  // namespace lingua
