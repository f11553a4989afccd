#include "lingua/model/attention.h"

#include <cmath>
#include <cstring>

#include "lingua/ops/attention/attention.h"
#include "lingua/ops/linear/linear.h"

namespace lingua {

KVCache::KVCache(const ModelDims& d, int max_len_) : max_len(max_len_) {
  size_t n = (size_t)max_len * d.n_kv_heads * d.head_dim;
  k.assign(d.n_layers, std::vector<float>(n));
  v.assign(d.n_layers, std::vector<float>(n));
}

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

void Attention::forward(const Tensor& x, const Tensor& y, const StepContext& ctx) {
  int64_t B = ctx.B, T = ctx.T, N = ctx.rows();
  Arena& ar = *ctx.arena;
  size_t mark = ar.mark();
  q_ = arena_tensor(ar, {N, H_ * hd_});
  k_ = arena_tensor(ar, {N, KV_ * hd_});
  v_ = arena_tensor(ar, {N, KV_ * hd_});
  o_ = arena_tensor(ar, {N, H_ * hd_});
  lse_ = arena_tensor(ar, {B, H_, T});
  linear_forward(x, store_.param(wq_), q_);
  linear_forward(x, store_.param(wk_), k_);
  linear_forward(x, store_.param(wv_), v_);
  Tensor q4(q_.data, {B, T, H_, hd_}), k4(k_.data, {B, T, KV_, hd_}), v4(v_.data, {B, T, KV_, hd_});
  Tensor o4(o_.data, {B, T, H_, hd_});
  rope_forward(q4, rope_, ctx.pos0);
  rope_forward(k4, rope_, ctx.pos0);
  attention_forward(q4, k4, v4, o4, lse_);
  linear_forward(o_, store_.param(wo_), y);
  if (!ctx.save_for_backward) ar.release_to(mark);
}

void Attention::backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const StepContext& ctx) {
  int64_t B = ctx.B, T = ctx.T, N = ctx.rows();
  Arena& ar = *ctx.arena;
  size_t mark = ar.mark();
  Tensor d_o = arena_tensor(ar, {N, H_ * hd_});
  Tensor dq = arena_tensor(ar, {N, H_ * hd_});
  Tensor dk = arena_tensor(ar, {N, KV_ * hd_});
  Tensor dv = arena_tensor(ar, {N, KV_ * hd_});
  linear_backward(o_, store_.param(wo_), dy, d_o, store_.grad(wo_));
  Tensor dq4(dq.data, {B, T, H_, hd_}), dk4(dk.data, {B, T, KV_, hd_}), dv4(dv.data, {B, T, KV_, hd_});
  attention_backward(Tensor(q_.data, {B, T, H_, hd_}), Tensor(k_.data, {B, T, KV_, hd_}),
                     Tensor(v_.data, {B, T, KV_, hd_}), Tensor(o_.data, {B, T, H_, hd_}), lse_,
                     Tensor(d_o.data, {B, T, H_, hd_}), dq4, dk4, dv4);
  rope_backward(dq4, rope_, ctx.pos0);
  rope_backward(dk4, rope_, ctx.pos0);
  // dq, dk are now gradients of the projections before RoPE.
  linear_backward(x, store_.param(wq_), dq, dx, store_.grad(wq_));
  linear_backward(x, store_.param(wk_), dk, dx, store_.grad(wk_), true);
  linear_backward(x, store_.param(wv_), dv, dx, store_.grad(wv_), true);
  ar.release_to(mark);
}

void Attention::forward_cached(const Tensor& x, const Tensor& y, KVCache& cache, int layer, Arena& ar) {
  int64_t T = x.size(0), pos0 = cache.len;
  LINGUA_CHECK(pos0 + T <= cache.max_len, "generation: sequence of ", pos0 + T, " tokens exceeds the KV cache (",
               cache.max_len, ")");
  size_t mark = ar.mark();
  Tensor q = arena_tensor(ar, {T, H_ * hd_});
  Tensor o = arena_tensor(ar, {T, H_ * hd_});
  float* kc = cache.k[layer].data() + pos0 * KV_ * hd_;
  float* vc = cache.v[layer].data() + pos0 * KV_ * hd_;
  Tensor k(kc, {T, KV_ * hd_}), v(vc, {T, KV_ * hd_});
  linear_forward(x, store_.param(wq_), q);
  linear_forward(x, store_.param(wk_), k);
  linear_forward(x, store_.param(wv_), v);
  rope_forward(Tensor(q.data, {1, T, H_, hd_}), rope_, (int)pos0);
  rope_forward(Tensor(kc, {1, T, KV_, hd_}), rope_, (int)pos0);
  int64_t S = pos0 + T;
  attention_forward(Tensor(q.data, {1, T, H_, hd_}), Tensor(cache.k[layer].data(), {1, S, KV_, hd_}),
                    Tensor(cache.v[layer].data(), {1, S, KV_, hd_}), Tensor(o.data, {1, T, H_, hd_}), Tensor());
  linear_forward(o, store_.param(wo_), y);
  ar.release_to(mark);
}

size_t Attention::saved_floats(int64_t B, int64_t T) const {
  int64_t N = B * T;
  return 2 * arena_floats(N * H_ * hd_) + 2 * arena_floats(N * KV_ * hd_) + arena_floats(B * H_ * T);
}
size_t Attention::scratch_floats(int64_t B, int64_t T) const {
  int64_t N = B * T;
  return 2 * arena_floats(N * H_ * hd_) + 2 * arena_floats(N * KV_ * hd_);
}
int64_t Attention::matmul_params() const { return dim_ * (2 * H_ * hd_ + 2 * KV_ * hd_); }

}  // namespace lingua
