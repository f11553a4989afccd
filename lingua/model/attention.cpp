#include "lingua/model/attention.h"

#include <cmath>

#include "lingua/model/probe_observer.h"
#include "lingua/ops/attention/attention.h"

namespace lingua {

KVCache::KVCache(const ModelDims& d, int max_len_, Device device, DType dtype, int batch_)
    : max_len(max_len_), batch(batch_), kv_(d.n_kv_heads), hd_(d.head_dim), device_(device), dtype_(dtype) {
  LINGUA_CHECK(batch >= 1 && max_len >= 1, "KV cache: batch (", batch, ") and length (", max_len,
               ") must be positive");
  size_t n = (size_t)batch * max_len * kv_ * hd_;
  for (int i = 0; i < 2 * d.n_layers; ++i) {
    if (device == Device::cuda) dev_.emplace_back(n * dtype_size(dtype));
    else host_.emplace_back(n);
  }
}

Tensor KVCache::view(int layer, bool is_v) const {
  int i = 2 * layer + (is_v ? 1 : 0);
  void* base = device_ == Device::cuda ? dev_[i].data() : const_cast<float*>(host_[i].data());
  return Tensor(base, {batch, max_len, kv_, hd_}, dtype_, device_);
}
void KVCache::check_room(int64_t n) const {
  LINGUA_CHECK(len + n <= max_len, "generation: sequence of ", len + n, " rows exceeds the KV cache (", max_len, ")");
}
Tensor KVCache::rows(int layer, bool is_v, int64_t n) const {
  LINGUA_ASSERT(batch == 1);
  check_room(n);
  const Tensor all = view(layer, is_v);
  return Tensor(static_cast<char*>(all.data) + (size_t)len * kv_ * hd_ * dtype_size(dtype_), {n, kv_ * hd_}, dtype_,
                device_);
}
Tensor KVCache::k_rows(int layer, int64_t n) const { return rows(layer, false, n); }
Tensor KVCache::v_rows(int layer, int64_t n) const { return rows(layer, true, n); }
Tensor KVCache::k(int layer) const { return view(layer, false); }
Tensor KVCache::v(int layer) const { return view(layer, true); }

void KVCache::append(int layer, const Tensor& new_k, const Tensor& new_v, int64_t n) {
  check_room(n);
  for (int i = 0; i < 2; ++i) {
    const Tensor rows = reshape(view(layer, i == 1), {(int64_t)batch * max_len, kv_ * hd_});
    copy_row_blocks(rows, max_len, len, i == 0 ? new_k : new_v, n, 0, batch, n);
  }
}

Attention::Attention(ParamStore& store, const ModelDims& d, const ModelConfig& cfg, int layer,
                     const std::string& prefix, const RopeTable& rope)
    : rope_(rope), dim_(d.dim), H_(d.n_heads), KV_(d.n_kv_heads), hd_(d.head_dim) {
  // Lingua: q, k, v std = init_base_std or dim^-0.5; wo std = that / init_std_factor.
  double factor = init_std_factor(cfg.init_std_factor, layer, d.n_layers, d.dim);
  float std = (float)cfg.init_base_std.value_or(std::pow(d.dim, -0.5));
  auto spec = [&](const char* name, int64_t out, int64_t in, const char* out_axis, const char* in_axis, float s) {
    ParamSpec p;
    p.name = prefix + name;
    p.shape = {out, in};
    p.axes = {out_axis, in_axis};
    p.init = ParamInit::trunc_normal(s);
    return p;
  };
  wq_ = Linear(store, spec("wq.weight", H_ * hd_, dim_, "q_heads", "dim", std));
  wk_ = Linear(store, spec("wk.weight", KV_ * hd_, dim_, "kv_heads", "dim", std));
  wv_ = Linear(store, spec("wv.weight", KV_ * hd_, dim_, "kv_heads", "dim", std));
  wo_ = Linear(store, spec("wo.weight", dim_, H_ * hd_, "dim", "q_heads", (float)(std / factor)));
}

void Attention::forward(const Tensor& x, const Tensor& residual, const Tensor& y, const StepContext& ctx) {
  const int64_t B = ctx.seq.B, S = ctx.seq.S(), N = ctx.rows();
  Arena& ar = forward_arena(ctx);
  size_t mark = ar.mark();
  q_ = arena_tensor(ar, {B, S, H_, hd_}, ctx.act);
  k_ = arena_tensor(ar, {B, S, KV_, hd_}, ctx.act);
  v_ = arena_tensor(ar, {B, S, KV_, hd_}, ctx.act);
  o_ = arena_tensor(ar, {B, S, H_, hd_}, ctx.act);
  lse_ = arena_tensor(ar, {B, H_, S});
  wq_.forward(x, reshape(q_, {N, H_ * hd_}));
  wk_.forward(x, reshape(k_, {N, KV_ * hd_}));
  wv_.forward(x, reshape(v_, {N, KV_ * hd_}));
  rope_forward(q_, rope_, ctx.pos0, ctx.seq.prefix);
  rope_forward(k_, rope_, ctx.pos0, ctx.seq.prefix);
  if (ProbeObserver* o = probe_observer()) {
    const std::string n = wq_.name();
    o->attention_scores(n.substr(0, n.size() - 3), q_, k_, ctx.seq.prefix);  // (without ".wq")
  }
  attention_forward(q_, k_, v_, o_, lse_);
  wo_.forward(reshape(o_, {N, H_ * hd_}), y, residual);
  if (!ctx.save_for_backward) ar.release_to(mark);
}

void Attention::backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const StepContext& ctx) {
  const int64_t B = ctx.seq.B, S = ctx.seq.S(), N = ctx.rows();
  Arena& ar = *ctx.scratch;
  size_t mark = ar.mark();
  LINGUA_ASSERT(dy.dtype == ctx.act);
  Tensor d_o = arena_tensor(ar, {B, S, H_, hd_}, ctx.act);
  Tensor dq = arena_tensor(ar, {B, S, H_, hd_}, ctx.act);
  Tensor dk = arena_tensor(ar, {B, S, KV_, hd_}, ctx.act);
  Tensor dv = arena_tensor(ar, {B, S, KV_, hd_}, ctx.act);
  wo_.backward(reshape(o_, {N, H_ * hd_}), dy, reshape(d_o, {N, H_ * hd_}));
  attention_backward(q_, k_, v_, o_, lse_, d_o, dq, dk, dv);
  // dq, dk become gradients of the projections before RoPE.
  rope_backward(dq, rope_, ctx.pos0, ctx.seq.prefix);
  rope_backward(dk, rope_, ctx.pos0, ctx.seq.prefix);
  wq_.backward(x, reshape(dq, {N, H_ * hd_}), dx);
  wk_.backward(x, reshape(dk, {N, KV_ * hd_}), dx, true);
  wv_.backward(x, reshape(dv, {N, KV_ * hd_}), dx, true);
  ar.release_to(mark);
}

void Attention::forward_cached(const Tensor& x, const Tensor& residual, const Tensor& y, KVCache& cache, int layer,
                               const StepContext& ctx) {
  const int64_t B = ctx.seq.B, n = ctx.seq.S(), rows = x.size(0);
  LINGUA_CHECK(cache.batch == B && rows == B * n, "generation: a KV cache of ", cache.batch,
               " sequences decoding ", B, " (", rows, " rows)");
  Arena& ar = *ctx.scratch;
  size_t mark = ar.mark();
  Tensor q = arena_tensor(ar, {B, n, H_, hd_}, ctx.act);
  Tensor o = arena_tensor(ar, {B, n, H_, hd_}, ctx.act);
  // One sequence writes its new keys and values straight into the cache; several, row blocks apart.
  const bool direct = B == 1;
  Tensor k = direct ? cache.k_rows(layer, n) : arena_tensor(ar, {rows, KV_ * hd_}, ctx.act);
  Tensor v = direct ? cache.v_rows(layer, n) : arena_tensor(ar, {rows, KV_ * hd_}, ctx.act);
  wq_.forward(x, reshape(q, {rows, H_ * hd_}));
  wk_.forward(x, k);
  wv_.forward(x, v);
  rope_forward(q, rope_, ctx.pos0, ctx.seq.prefix);
  rope_forward(reshape(k, {B, n, KV_, hd_}), rope_, ctx.pos0, ctx.seq.prefix);
  if (!direct) cache.append(layer, k, v, n);
  if (cache.len == 0)  // the first rows: the keys are the new ones, contiguous in k and v (cuDNN may run)
    attention_forward(q, reshape(k, {B, n, KV_, hd_}), reshape(v, {B, n, KV_, hd_}), o, Tensor());
  else
    attention_forward_cached(q, cache.k(layer), cache.v(layer), cache.len + n, o);
  wo_.forward(reshape(o, {rows, H_ * hd_}), y, residual);
  ar.release_to(mark);
}

size_t Attention::saved_bytes(const SeqLayout& seq, DType act) const {
  const int64_t N = seq.rows();
  return 2 * arena_bytes(N * H_ * hd_, act) + 2 * arena_bytes(N * KV_ * hd_, act) + arena_bytes(seq.B * H_ * seq.S());
}
size_t Attention::scratch_bytes(const SeqLayout& seq, DType act) const {
  const int64_t N = seq.rows();
  return 2 * arena_bytes(N * H_ * hd_, act) + 2 * arena_bytes(N * KV_ * hd_, act);
}
int64_t Attention::matmul_params() const { return dim_ * (2 * H_ * hd_ + 2 * KV_ * hd_); }

}  // namespace lingua
