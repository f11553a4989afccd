#include "lingua/model/block.h"

#include <algorithm>

#include "lingua/core/profiler.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"

namespace lingua {

ParamSpec norm_weight_spec(const std::string& name, int64_t dim) {
  ParamSpec p;
  p.name = name;
  p.shape = {dim};
  p.axes = {"dim"};
  p.init = ParamInit::ones();
  p.compute_copy = false;  // the norm kernels read the fp32 weights
  return p;
}

TransformerBlock::TransformerBlock(ParamStore& s, const ModelDims& d, const ModelConfig& cfg, int i,
                                   const RopeTable& rope)
    : store_(s),
      dim_(d.dim),
      eps_(d.norm_eps),
      attn_norm_(s.add(norm_weight_spec("layers." + std::to_string(i) + ".attention_norm.weight", d.dim))),
      ffn_norm_(s.add(norm_weight_spec("layers." + std::to_string(i) + ".ffn_norm.weight", d.dim))),
      attention_(s, d, cfg, i, "layers." + std::to_string(i) + ".attention.", rope),
      ffn_(make_ffn(cfg.ffn, FfnBuildArgs{s, d, cfg, i, "layers." + std::to_string(i) + ".feed_forward."})) {}

Tensor TransformerBlock::forward(const Tensor& x, const StepContext& ctx) {
  const int64_t N = ctx.rows(), D = dim_;
  Arena& ar = *ctx.saved;
  const bool shared = (ctx.shared_norm.data != nullptr);
  n1_ = shared ? ctx.shared_norm : arena_tensor(ar, {N, D}, ctx.act);
  rstd1_ = arena_tensor(ar, {N});
  h_ = arena_tensor(ar, {N, D});
  n2_ = shared ? ctx.shared_norm : arena_tensor(ar, {N, D}, ctx.act);
  rstd2_ = arena_tensor(ar, {N});
  rmsnorm_forward(x, store_.param(attn_norm_), eps_, n1_, rstd1_);
  {
    LINGUA_PROFILE_SCOPE("attention");
    attention_.forward(n1_, x, h_, ctx);  // h = x + attention(n1)
  }
  rmsnorm_forward(h_, store_.param(ffn_norm_), eps_, n2_, rstd2_);
  Tensor y = arena_tensor(ar, {N, D});
  {
    LINGUA_PROFILE_SCOPE("feed_forward");
    ffn_->forward(n2_, h_, y, ctx);  // y = h + ffn(n2)
  }
  return y;
}

// A norm weight's gradient; for a frozen weight, scratch the op writes into and nobody reads.
Tensor TransformerBlock::norm_grad(int id, Arena& scratch) const {
  Tensor g = store_.grad(id);
  return g.data ? g : arena_tensor(scratch, {dim_});
}

void TransformerBlock::backward(const Tensor& x, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) {
  // dx is the gradient of the residual stream (f32), updated in place: through y = h + ffn(n2) it
  // becomes dh = dx + d(ffn_norm)(dn), and through h = x + attention(n1) the block input's
  // gradient. Each norm backward also writes dx in the activation dtype (dx_act), the input of the
  // next matmuls.
  const int64_t N = ctx.rows(), D = dim_;
  Arena& ar = *ctx.scratch;
  const bool recompute = (ctx.shared_norm.data != nullptr);
  const Tensor dx_copy = dx_act.data == dx.data ? Tensor() : dx_act;
  size_t mark = ar.mark();
  Tensor dn = arena_tensor(ar, {N, D}, ctx.act);  // a module's input gradient, as its matmul writes it
  // Recomputation rewrites rstd with the same bits it had.
  if (recompute) rmsnorm_forward(h_, store_.param(ffn_norm_), eps_, n2_, rstd2_);
  {
    LINGUA_PROFILE_SCOPE("feed_forward");
    ffn_->backward(n2_, dx_act, dn, ctx);
  }
  rmsnorm_backward(h_, store_.param(ffn_norm_), rstd2_, dn, dx, norm_grad(ffn_norm_, ar), true, dx_copy);
  if (recompute) rmsnorm_forward(x, store_.param(attn_norm_), eps_, n1_, rstd1_);
  {
    LINGUA_PROFILE_SCOPE("attention");
    attention_.backward(n1_, dx_act, dn, ctx);
  }
  rmsnorm_backward(x, store_.param(attn_norm_), rstd1_, dn, dx, norm_grad(attn_norm_, ar), true, dx_copy);
  ar.release_to(mark);
}

void TransformerBlock::forward_cached(const Tensor& x, KVCache& cache, int layer, const StepContext& ctx) {
  Arena& ar = *ctx.scratch;
  const size_t mark = ar.mark();
  const int64_t rows = x.size(0);
  Tensor n = arena_tensor(ar, {rows, dim_}, ctx.act), r = arena_tensor(ar, {rows});
  rmsnorm_forward(x, store_.param(attn_norm_), eps_, n, r);
  attention_.forward_cached(n, x, x, cache, layer, ctx);  // x += attention(n)
  rmsnorm_forward(x, store_.param(ffn_norm_), eps_, n, r);
  ffn_->forward(n, x, x, ctx);  // x += ffn(n)
  ar.release_to(mark);
}

size_t TransformerBlock::frozen_norm_bytes() const {
  return (store_.trainable(attn_norm_) ? 0 : arena_bytes(dim_)) + (store_.trainable(ffn_norm_) ? 0 : arena_bytes(dim_));
}

size_t TransformerBlock::saved_bytes(const SeqLayout& seq, DType act, bool training, bool shared_norms) const {
  const int64_t N = seq.rows(), D = dim_;
  // n1 and n2 unless shared, h and y (f32), their rstd; the modules' tensors when training.
  size_t own = (shared_norms ? 0 : 2 * arena_bytes(N * D, act)) + 2 * arena_bytes(N * D) + 2 * arena_bytes(N);
  if (training) own += attention_.saved_bytes(seq, act) + ffn_->saved_bytes(N, act);
  return own;
}

size_t TransformerBlock::scratch_bytes(const SeqLayout& seq, DType act, bool training) const {
  const int64_t N = seq.rows();
  if (training)  // dn, then the larger module's backward
    return arena_bytes(N * dim_, act) + std::max(attention_.scratch_bytes(seq, act), ffn_->scratch_bytes(N, act)) +
           frozen_norm_bytes();
  // A forward that saves nothing keeps the modules' tensors in scratch (decoding: after the norm
  // output and its rstd).
  return arena_bytes(N * dim_, act) + arena_bytes(N) +
         std::max(attention_.saved_bytes(seq, act) + attention_.scratch_bytes(seq, act),
                  ffn_->saved_bytes(N, act) + ffn_->scratch_bytes(N, act));
}

}  // namespace lingua
