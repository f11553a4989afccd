#pragma once
// The language-model head (Lingua: norm + output): a final RMSNorm, then the output projection
// (its own [vocab, dim] weight, or the token embedding's when tied) with the fused cross-entropy,
// which never materialises the logits of a whole batch. It works on token rows only (prefix rows
// are dropped before it). The executor knows only this interface, so another head (several
// tokens ahead, say) replaces it without touching the executor.
#include "lingua/model/dims.h"
#include "lingua/model/linear.h"
#include "lingua/model/module.h"

namespace lingua {

class LMHead {
 public:
  // tied: the id of the token embedding the output shares (-1: its own weight, std init_std).
  LMHead(ParamStore& store, const ModelDims& dims, float init_std, int tied);

  // x: [N, dim] f32. Keeps the norm output [N, dim] (ctx.act) and its rstd [N] in ctx.saved.
  void forward(const Tensor& x, const StepContext& ctx);
  // Training, after forward: *loss_sum = (accumulate ? *loss_sum : 0) + sum of the token nll (host
  // memory on the CPU, device memory on CUDA); returns d(loss_scale * sum nll)/d(norm output)
  // [N, dim] (ctx.act, taken from ctx.scratch) and accumulates the output weight's gradient.
  Tensor loss_backward(const Tensor& targets, float loss_scale, double* loss_sum, bool accumulate,
                       const StepContext& ctx);
  // Then through the norm: dx [N, dim] f32 written, dx_copy (ctx.act or empty) with it.
  void norm_backward(const Tensor& x, const Tensor& dnorm, const Tensor& dx, const Tensor& dx_copy,
                     const StepContext& ctx);
  // After forward: the summed nll of the targets (host value; nll [N] f32 per row, may be empty),
  // or the logits [N, vocab] f32.
  double loss(const Tensor& targets, const Tensor& nll) const;
  void logits(const Tensor& out) const;
  // The logits of rows x [n, dim] f32 directly (decoding), with transient memory from ctx.scratch.
  void logits_of(const Tensor& x, const Tensor& out, const StepContext& ctx) const;

  size_t saved_bytes(int64_t rows, DType act) const;          // the norm output and rstd
  size_t scratch_bytes(int64_t rows, DType act, bool training) const;  // dnorm (+ a frozen norm's gradient)
  const Linear& output() const { return output_; }
  int64_t matmul_params() const { return output_.out() * output_.in(); }

 private:
  ParamStore& store_;
  int64_t dim_;
  float eps_;
  int norm_;
  Linear output_;
  Tensor xf_, rstd_;  // saved: the norm output and its rstd
};

}  // namespace lingua
