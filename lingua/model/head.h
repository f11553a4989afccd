#pragma once
// Heads: what the executor runs after the blocks, on token rows only (prefix rows are dropped
// before it). The executor knows only the Head interface, so another head (several tokens ahead,
// say) replaces LMHead without touching the executor.
#include "lingua/model/dims.h"
#include "lingua/model/linear.h"
#include "lingua/model/module.h"

namespace lingua {

class Head {
 public:
  virtual ~Head() = default;
  // x: [N, dim] f32, the last block's token rows. Keeps what the calls below need in ctx.saved.
  virtual void forward(const Tensor& x, const StepContext& ctx) = 0;
  // Training, after forward, in two calls (so that the caller can place its own buffers between):
  // the loss, *loss_sum = (accumulate ? *loss_sum : 0) + sum of the token nll (host memory on the
  // CPU, device memory on CUDA), returning the gradient of loss_scale * sum nll with respect to the
  // head's inner activation ([N, dim] ctx.act, from ctx.scratch), parameter gradients accumulated;
  virtual Tensor loss_backward(const Tensor& targets, float loss_scale, double* loss_sum, bool accumulate,
                               const StepContext& ctx) = 0;
  // then back to x: dx [N, dim] f32 written, dx_copy (ctx.act, or empty) with it.
  virtual void input_backward(const Tensor& x, const Tensor& dinner, const Tensor& dx, const Tensor& dx_copy,
                              const StepContext& ctx) = 0;
  // After forward: the summed nll of the targets (host value; nll [N] f32 per row, may be empty),
  // or the logits [N, vocab] f32.
  virtual double loss(const Tensor& targets, const Tensor& nll) const = 0;
  virtual void logits(const Tensor& out) const = 0;
  // The logits of rows x [n, dim] f32 directly (decoding), transient memory from ctx.scratch.
  virtual void logits_of(const Tensor& x, const Tensor& out, const StepContext& ctx) const = 0;
  // Arena bytes for `rows` token rows: kept from forward (saved region), and transient.
  virtual size_t saved_bytes(int64_t rows, DType act) const = 0;
  virtual size_t scratch_bytes(int64_t rows, DType act, bool training) const = 0;
};

// The language-model head (Lingua: norm + output): a final RMSNorm, then the output projection
// (its own [vocab, dim] weight, or the token embedding's when tied) with the fused cross-entropy,
// which never materialises the logits of a whole batch. Its inner activation is the norm output.
class LMHead final : public Head {
 public:
  // tied: the id of the token embedding the output shares (-1: its own weight, std init_std).
  LMHead(ParamStore& store, const ModelDims& dims, float init_std, int tied);
  void forward(const Tensor& x, const StepContext& ctx) override;
  Tensor loss_backward(const Tensor& targets, float loss_scale, double* loss_sum, bool accumulate,
                       const StepContext& ctx) override;
  void input_backward(const Tensor& x, const Tensor& dnorm, const Tensor& dx, const Tensor& dx_copy,
                      const StepContext& ctx) override;
  double loss(const Tensor& targets, const Tensor& nll) const override;
  void logits(const Tensor& out) const override;
  void logits_of(const Tensor& x, const Tensor& out, const StepContext& ctx) const override;
  size_t saved_bytes(int64_t rows, DType act) const override;                       // norm output, rstd
  size_t scratch_bytes(int64_t rows, DType act, bool training) const override;      // dnorm (+ frozen dw)

 private:
  ParamStore& store_;
  int64_t dim_;
  float eps_;
  int norm_;
  Linear output_;
  Tensor xf_, rstd_;  // saved: the norm output and its rstd
};

}  // namespace lingua
