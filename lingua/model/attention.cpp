#include "lingua/model/attention.h"

#include <cmath>

#include "lingua/ops/attention/attention.h"
#include "lingua/ops/linear/linear.h"

namespace lingua {

KVCache::KVCache(const ModelDims& d, int max_len_, Device device, DType dtype)
    : max_len(max_len_), kv_(d.n_kv_heads), hd_(d.head_dim), device_(device), dtype_(dtype) {
  size_t n = (size_t)max_len * kv_ * hd_;
  for (int i = 0; i < 2 * d.n_layers; ++i) {
    if (device == Device::cuda) dev_.emplace_back(n * dtype_size(dtype));
    else host_.emplace_back(n);
  }
}

Tensor KVCache::view(int layer, bool is_v, int64_t pos, std::initializer_list<int64_t> dims) const {
  int i = 2 * layer + (is_v ? 1 : 0);
  char* base = device_ == Device::cuda ? static_cast<char*>(dev_[i].data())
                                       : reinterpret_cast<char*>(const_cast<float*>(host_[i].data()));
  return Tensor(base + pos * kv_ * hd_ * dtype_size(dtype_), dims, dtype_, device_);
}
Tensor KVCache::k(int layer, int64_t len) const { return view(layer, false, 0, {1, len, kv_, hd_}); }
Tensor KVCache::v(int layer, int64_t len) const { return view(layer, true, 0, {1, len, kv_, hd_}); }
Tensor KVCache::k_at(int layer, int64_t pos, int64_t n) const { return view(layer, false, pos, {n, kv_ * hd_}); }
Tensor KVCache::v_at(int layer, int64_t pos, int64_t n) const { return view(layer, true, pos, {n, kv_ * hd_}); }

Attention::Attention(ParamStore& store, const ModelDims& d, const ModelConfig& cfg, int layer,
                     const std::string& prefix, const RopeTable& rope)
    : store_(store), rope_(rope), dim_(d.dim), H_(d.n_heads), KV_(d.n_kv_heads), hd_(d.head_dim) {
  // Lingua: q, k, v std = init_base_std or dim^-0.5; wo std = that / init_std_factor.
  double factor = init_std_factor(cfg.init_std_factor, layer, d.n_layers, d.dim);
  float std = (float)cfg.init_base_std.value_or(std::pow(d.dim, -0.5));
  wq_ = store.add(prefix + "wq.weight", {H_ * hd_, dim_}, {ParamInit::trunc_normal, std});
  wk_ = store.add(prefix + "wk.weight", {KV_ * hd_, dim_}, {ParamInit::trunc_normal, std});
  wv_ = store.add(prefix + "wv.weight", {KV_ * hd_, dim_}, {ParamInit::trunc_normal, std});
  wo_ = store.add(prefix + "wo.weight", {dim_, H_ * hd_}, {ParamInit::trunc_normal, (float)(std / factor)});
}

void Attention::forward(const Tensor& x, const Tensor& residual, const Tensor& y, const StepContext& ctx) {
  int64_t B = ctx.B, T = ctx.T, N = ctx.rows();
  Arena& ar = forward_arena(ctx);
  size_t mark = ar.mark();
  q_ = arena_tensor(ar, {B, T, H_, hd_}, ctx.act);
  k_ = arena_tensor(ar, {B, T, KV_, hd_}, ctx.act);
  v_ = arena_tensor(ar, {B, T, KV_, hd_}, ctx.act);
  o_ = arena_tensor(ar, {B, T, H_, hd_}, ctx.act);
  lse_ = arena_tensor(ar, {B, H_, T});
  linear_forward(x, store_.compute_param(wq_), reshape(q_, {N, H_ * hd_}));
  linear_forward(x, store_.compute_param(wk_), reshape(k_, {N, KV_ * hd_}));
  linear_forward(x, store_.compute_param(wv_), reshape(v_, {N, KV_ * hd_}));
  rope_forward(q_, rope_, ctx.pos0);
  rope_forward(k_, rope_, ctx.pos0);
  attention_forward(q_, k_, v_, o_, lse_);
  linear_forward(reshape(o_, {N, H_ * hd_}), store_.compute_param(wo_), y, residual);
  if (!ctx.save_for_backward) ar.release_to(mark);
}

void Attention::backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const StepContext& ctx) {
  int64_t B = ctx.B, T = ctx.T, N = ctx.rows();
  Arena& ar = *ctx.scratch;
  size_t mark = ar.mark();
  LINGUA_ASSERT(dy.dtype == ctx.act);
  Tensor d_o = arena_tensor(ar, {B, T, H_, hd_}, ctx.act);
  Tensor dq = arena_tensor(ar, {B, T, H_, hd_}, ctx.act);
  Tensor dk = arena_tensor(ar, {B, T, KV_, hd_}, ctx.act);
  Tensor dv = arena_tensor(ar, {B, T, KV_, hd_}, ctx.act);
  linear_backward(reshape(o_, {N, H_ * hd_}), store_.compute_param(wo_), dy, reshape(d_o, {N, H_ * hd_}),
                  store_.grad(wo_));
  attention_backward(q_, k_, v_, o_, lse_, d_o, dq, dk, dv);
  // dq, dk become gradients of the projections before RoPE.
  rope_backward(dq, rope_, ctx.pos0);
  rope_backward(dk, rope_, ctx.pos0);
  linear_backward(x, store_.compute_param(wq_), reshape(dq, {N, H_ * hd_}), dx, store_.grad(wq_));
  linear_backward(x, store_.compute_param(wk_), reshape(dk, {N, KV_ * hd_}), dx, store_.grad(wk_), true);
  linear_backward(x, store_.compute_param(wv_), reshape(dv, {N, KV_ * hd_}), dx, store_.grad(wv_), true);
  ar.release_to(mark);
}

void Attention::forward_cached(const Tensor& x, const Tensor& residual, const Tensor& y, KVCache& cache, int layer,
                               const StepContext& ctx) {
  int64_t T = x.size(0), pos0 = cache.len;
  LINGUA_CHECK(pos0 + T <= cache.max_len, "generation: sequence of ", pos0 + T, " tokens exceeds the KV cache (",
               cache.max_len, ")");
  Arena& ar = *ctx.scratch;
  size_t mark = ar.mark();
  Tensor q = arena_tensor(ar, {1, T, H_, hd_}, ctx.act);
  Tensor o = arena_tensor(ar, {1, T, H_, hd_}, ctx.act);
  Tensor k = cache.k_at(layer, pos0, T), v = cache.v_at(layer, pos0, T);
  linear_forward(x, store_.compute_param(wq_), reshape(q, {T, H_ * hd_}));
  linear_forward(x, store_.compute_param(wk_), k);
  linear_forward(x, store_.compute_param(wv_), v);
  rope_forward(q, rope_, (int)pos0);
  rope_forward(reshape(k, {1, T, KV_, hd_}), rope_, (int)pos0);
  int64_t S = pos0 + T;
  attention_forward(q, cache.k(layer, S), cache.v(layer, S), o, Tensor());
  linear_forward(reshape(o, {T, H_ * hd_}), store_.compute_param(wo_), y, residual);
  ar.release_to(mark);
}

size_t Attention::saved_bytes(int64_t B, int64_t T, DType act) const {
  int64_t N = B * T;
  return 2 * arena_bytes(N * H_ * hd_, act) + 2 * arena_bytes(N * KV_ * hd_, act) + arena_bytes(B * H_ * T);
}
size_t Attention::scratch_bytes(int64_t B, int64_t T, DType act) const {
  int64_t N = B * T;
  return 2 * arena_bytes(N * H_ * hd_, act) + 2 * arena_bytes(N * KV_ * hd_, act);
}
int64_t Attention::matmul_params() const { return dim_ * (2 * H_ * hd_ + 2 * KV_ * hd_); }

}  // namespace lingua
