#pragma once
// Blocks: what the executor runs between the embedding and the head, each a residual map of the
// fp32 stream [rows, dim] -> [rows, dim]. The executor knows only the Block interface, so other
// block types (state-space, recurrent) slot in beside TransformerBlock without touching it.
#include <memory>
#include <string>

#include "lingua/model/attention.h"
#include "lingua/model/ffn/ffn.h"

namespace lingua {

class Block {
 public:
  virtual ~Block() = default;
  // x: [rows, dim] f32 (rows laid out as ctx.seq). Returns y [rows, dim] f32, taken from ctx.saved:
  // the next block's input. With ctx.save_for_backward keeps what backward needs in ctx.saved;
  // otherwise transient tensors go to ctx.scratch.
  virtual Tensor forward(const Tensor& x, const StepContext& ctx) = 0;
  // dx: [rows, dim] f32, dL/dy on entry and dL/dx on return; dx_act: the same in ctx.act (dx
  // itself when that is f32), updated with it. Parameter gradients accumulated.
  virtual void backward(const Tensor& x, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) = 0;
  // Decoding one sequence: x [rows, dim] f32 (the new rows) updated in place to y; the block keeps
  // its state for the earlier rows in `cache` (layer `layer`).
  virtual void forward_cached(const Tensor& x, KVCache& cache, int layer, const StepContext& ctx) = 0;
  // Arena bytes for a micro-batch laid out as `seq`: kept in the saved region (y included), and
  // transient (scratch region), in training (forward and backward) or a forward alone.
  virtual size_t saved_bytes(const SeqLayout& seq, DType act, bool training, bool shared_norms) const = 0;
  virtual size_t scratch_bytes(const SeqLayout& seq, DType act, bool training) const = 0;
  virtual int64_t matmul_params() const = 0;  // multiplied per row (FLOPs)
  // What kind of FFN the block runs, for logs (a block without one: "").
  virtual std::string ffn_kind() const { return ""; }
  virtual const FeedForward* ffn() const { return nullptr; }  // the block's FFN, if it has one
  virtual FeedForward* ffn() { return nullptr; }
};

// One transformer block (Lingua's TransformerBlock), pre-norm:
//   h = x + attention(attention_norm(x));  y = h + feed_forward(ffn_norm(h))
// x, h, y are the fp32 residual stream [rows, dim]; the norm outputs are in the activation dtype.
// forward keeps n1, n2 (unless ctx.shared_norm is given: then backward recomputes them), their
// rstd and h, and returns y taken after the attention's saved tensors, before the FFN's.
class TransformerBlock final : public Block {
 public:
  TransformerBlock(ParamStore& store, const ModelDims& dims, const ModelConfig& cfg, int layer,
                   const RopeTable& rope);
  Tensor forward(const Tensor& x, const StepContext& ctx) override;
  void backward(const Tensor& x, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) override;
  void forward_cached(const Tensor& x, KVCache& cache, int layer, const StepContext& ctx) override;
  size_t saved_bytes(const SeqLayout& seq, DType act, bool training, bool shared_norms) const override;
  size_t scratch_bytes(const SeqLayout& seq, DType act, bool training) const override;
  int64_t matmul_params() const override { return attention_.matmul_params() + ffn_->matmul_params(); }
  std::string ffn_kind() const override { return ffn_->kind(); }
  const FeedForward* ffn() const override { return ffn_.get(); }
  FeedForward* ffn() override { return ffn_.get(); }

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
