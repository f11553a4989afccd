#pragma once
// One transformer block (Lingua's TransformerBlock), pre-norm:
//   h = x + attention(attention_norm(x));  y = h + feed_forward(ffn_norm(h))
// x, h, y are the fp32 residual stream [rows, dim]; the norm outputs are in the activation dtype.
#include <memory>

#include "lingua/model/attention.h"
#include "lingua/model/ffn/ffn.h"

namespace lingua {

class TransformerBlock {
 public:
  TransformerBlock(ParamStore& store, const ModelDims& dims, const ModelConfig& cfg, int layer,
                   const RopeTable& rope);

  // x: [rows, dim] f32. Returns y [rows, dim] f32, taken from ctx.saved (after the attention's saved
  // tensors, before the FFN's): the next block's input. Keeps what backward needs in ctx.saved
  // (n1, n2 unless ctx.shared_norm is given, their rstd, h); a forward without saving keeps the
  // modules' tensors in ctx.scratch.
  Tensor forward(const Tensor& x, const StepContext& ctx);
  // dx: [rows, dim] f32, dL/dy on entry and dL/dx on return; dx_act: the same in ctx.act (dx
  // itself when that is f32), updated with it. With ctx.shared_norm, the norms are recomputed.
  void backward(const Tensor& x, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx);
  // Decoding: x [rows, dim] f32 updated in place to y; n [rows, dim] ctx.act and r [rows] f32 are
  // the caller's scratch for the norm outputs.
  void forward_cached(const Tensor& x, const Tensor& n, const Tensor& r, KVCache& cache, int layer,
                      const StepContext& ctx);

  // Arena bytes for a micro-batch laid out as `seq`: kept in the saved region (y included), and
  // transient (scratch region).
  size_t saved_bytes(const SeqLayout& seq, DType act, bool training, bool shared_norms) const;
  size_t scratch_bytes(const SeqLayout& seq, DType act, bool training) const;
  int64_t matmul_params() const { return attention_.matmul_params() + ffn_->matmul_params(); }
  const FeedForward& ffn() const { return *ffn_; }

 private:
  Tensor norm_grad(int id, Arena& scratch) const;
  size_t frozen_norm_bytes() const;
  ParamStore& store_;
  int64_t dim_;
  float eps_;
  int attn_norm_, ffn_norm_;
  Attention attention_;
  std::unique_ptr<FeedForward> ffn_;
  Tensor n1_, rstd1_, h_, n2_, rstd2_;  // saved for backward
};

// An RMSNorm weight [dim] (ones), named `name`.
ParamSpec norm_weight_spec(const std::string& name, int64_t dim);

}  // namespace lingua
