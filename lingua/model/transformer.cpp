#include "lingua/model/transformer.h"

#include <cmath>

#include "lingua/core/profiler.h"
#include "lingua/ops/cross_entropy/cross_entropy.h"
#include "lingua/ops/embedding/embedding.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"

namespace lingua {

// One transformer block: pre-norm attention and FFN with residuals.
struct Transformer::Layer {
  int attn_norm, ffn_norm;
  Attention attention;
  std::unique_ptr<FeedForward> ffn;
  Tensor n1, rstd1, h, n2, rstd2;  // saved for backward (h: f32 residual; n1, n2: activations)

  Layer(ParamStore& s, const ModelDims& d, const ModelConfig& cfg, int i, const RopeTable& rope)
      : attn_norm(s.add("layers." + std::to_string(i) + ".attention_norm.weight", {d.dim}, {ParamInit::ones})),
        ffn_norm(s.add("layers." + std::to_string(i) + ".ffn_norm.weight", {d.dim}, {ParamInit::ones})),
        attention(s, d, cfg, i, "layers." + std::to_string(i) + ".attention.", rope),
        ffn(make_ffn(cfg.ffn, FfnBuildArgs{s, d, cfg, i, "layers." + std::to_string(i) + ".feed_forward."})) {}

  // n1 and n2 (activation dtype) are kept unless recomputed; h is the f32 residual after attention.
  size_t saved_bytes(int64_t B, int64_t T, int64_t D, DType act, bool recompute_norms) const {
    int64_t N = B * T;
    return (recompute_norms ? 0 : 2 * arena_bytes(N * D, act)) + arena_bytes(N * D) + 2 * arena_bytes(N) +
           attention.saved_bytes(B, T, act) + ffn->saved_bytes(N, act);
  }
  size_t scratch_bytes(int64_t B, int64_t T, int64_t D, DType act) const {
    int64_t N = B * T;
    return arena_bytes(N * D) + std::max(attention.scratch_bytes(B, T, act), ffn->scratch_bytes(N, act));
  }
};

Transformer::Transformer(const ModelConfig& cfg, const ModelDims& dims)
    : dims_(dims), recompute_norms_(cfg.recompute_norms) {
  float emb_std = (float)cfg.init_base_std.value_or(std::pow(dims.dim, -0.5));
  tok_emb_ = store_.add("tok_embeddings.weight", {dims.vocab, dims.dim}, {ParamInit::trunc_normal, emb_std},
                        "default", /*embedding=*/true);
  rope_ = rope_table(dims.max_seqlen, dims.head_dim, dims.rope_theta);
  for (int i = 0; i < dims.n_layers; ++i) layers_.push_back(std::make_unique<Layer>(store_, dims, cfg, i, rope_));
  norm_ = store_.add("norm.weight", {dims.dim}, {ParamInit::ones});
  output_ = dims.weight_tying ? tok_emb_
                              : store_.add("output.weight", {dims.vocab, dims.dim}, {ParamInit::trunc_normal, emb_std});
  store_.finalize();
  store_.init((uint64_t)cfg.seed);
}

Transformer::~Transformer() = default;

void Transformer::to_device(Device device) {
  if (device == this->device()) return;
  store_.to_device(device);
  arena_ = Arena(device);
  act_ = device == Device::cuda ? DType::bf16 : DType::f32;
}

size_t Transformer::activation_bytes(int B, int T) const {
  int64_t N = (int64_t)B * T, D = dims_.dim;
  // The residual stream entering each layer and after the last (f32), the final norm's output.
  size_t saved = (dims_.n_layers + 1) * arena_bytes(N * D) + arena_bytes(N * D, act_) + arena_bytes(N) +
                 (recompute_norms_ ? arena_bytes(N * D, act_) : 0);
  size_t scratch = 0;
  for (auto& l : layers_) {
    saved += l->saved_bytes(B, T, D, act_, recompute_norms_);
    scratch = std::max(scratch, l->scratch_bytes(B, T, D, act_));
  }
  // Backward keeps the final norm's input gradient and the residual gradient (f32, and in the
  // activation dtype when that is not f32) besides a layer's scratch; forward_loss keeps per-token
  // losses.
  return saved + scratch + arena_bytes(N * D, act_) + arena_bytes(N * D) +
         (act_ == DType::f32 ? 0 : arena_bytes(N * D, act_)) + arena_bytes(N);
}

void Transformer::ensure_arena(int B, int T, size_t extra_bytes) {
  LINGUA_CHECK(T <= dims_.max_seqlen, "sequence length ", T, " exceeds model.max_seqlen (", dims_.max_seqlen, ")");
  size_t need = activation_bytes(B, T) + extra_bytes;
  if (arena_.capacity() < need) arena_.reserve(need);
  arena_.reset();
}

Tensor Transformer::device_ids(const int32_t* ids, int64_t n, int slot) {
  if (device() == Device::cpu) return Tensor(ids, {n});
  DeviceBuffer& b = ids_dev_[slot];
  if (b.bytes() < (size_t)n * 4) b = DeviceBuffer((size_t)n * 4);
  copy_to_device(b.data(), ids, (size_t)n * 4);
  return Tensor(b.data(), {n}, DType::i32, Device::cuda);
}

StepContext Transformer::context(const int32_t* tokens, int B, int T, int pos0, bool save) {
  StepContext ctx;
  ctx.arena = &arena_;
  ctx.act = act_;
  ctx.tokens = tokens;
  ctx.B = B;
  ctx.T = T;
  ctx.pos0 = pos0;
  ctx.save_for_backward = save;
  return ctx;
}

void Transformer::forward_layers(const Tensor& tokens, int B, int T, StepContext& ctx) {
  int64_t N = (int64_t)B * T, D = dims_.dim;
  Arena& ar = arena_;
  xs_.assign(dims_.n_layers + 1, Tensor());
  xs_[0] = arena_tensor(ar, {N, D});
  const bool shared_norms = recompute_norms_ && ctx.save_for_backward;
  if (shared_norms) norm_buf_ = arena_tensor(ar, {N, D}, act_);
  embedding_forward(tokens, store_.param(tok_emb_), xs_[0]);
  for (int l = 0; l < dims_.n_layers; ++l) {
    ProfileScope scope(profiling_active() ? "layers." + std::to_string(l) : std::string());
    Layer& L = *layers_[l];
    const Tensor& x = xs_[l];
    L.n1 = shared_norms ? norm_buf_ : arena_tensor(ar, {N, D}, act_);
    L.rstd1 = arena_tensor(ar, {N});
    L.h = arena_tensor(ar, {N, D});
    L.n2 = shared_norms ? norm_buf_ : arena_tensor(ar, {N, D}, act_);
    L.rstd2 = arena_tensor(ar, {N});
    rmsnorm_forward(x, store_.param(L.attn_norm), dims_.norm_eps, L.n1, L.rstd1);
    {
      LINGUA_PROFILE_SCOPE("attention");
      L.attention.forward(L.n1, x, L.h, ctx);  // h = x + attention(n1)
    }
    rmsnorm_forward(L.h, store_.param(L.ffn_norm), dims_.norm_eps, L.n2, L.rstd2);
    xs_[l + 1] = arena_tensor(ar, {N, D});
    {
      LINGUA_PROFILE_SCOPE("feed_forward");
      L.ffn->forward(L.n2, L.h, xs_[l + 1], ctx);  // out = h + ffn(n2)
    }
  }
  xf_ = arena_tensor(ar, {N, D}, act_);
  rstdf_ = arena_tensor(ar, {N});
  rmsnorm_forward(xs_[dims_.n_layers], store_.param(norm_), dims_.norm_eps, xf_, rstdf_);
}

LossSum Transformer::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale) {
  ensure_arena(B, T);
  int64_t N = (int64_t)B * T, D = dims_.dim;
  StepContext ctx = context(tokens, B, T, 0, true);
  Tensor tok = device_ids(tokens, N, 0), tgt = device_ids(targets, N, 1);
  {
    LINGUA_PROFILE_SCOPE("forward");
    forward_layers(tok, B, T, ctx);
  }
  LINGUA_PROFILE_SCOPE("backward");
  Arena& ar = arena_;
  Tensor dxf = arena_tensor(ar, {N, D}, act_);
  LossSum ls;
  ls.nll = output_cross_entropy(xf_, store_.compute_param(output_), tgt, Tensor(), loss_scale, dxf,
                                store_.grad(output_));
  for (int64_t i = 0; i < N; ++i) ls.tokens += targets[i] >= 0;
  // Backward through the final norm and the layers. dx is the gradient of the residual stream
  // (f32), updated in place: through out = h + ffn(n2) it becomes dh = dx + d(ffn_norm)(dn), and
  // through h = x + attention(n1) the layer input's gradient. Each norm backward also writes dx
  // in the activation dtype (dx_act), the input of the next matmuls.
  Tensor dx = arena_tensor(ar, {N, D});
  Tensor dx_act = act_ == DType::f32 ? dx : arena_tensor(ar, {N, D}, act_);
  Tensor dx_copy = act_ == DType::f32 ? Tensor() : dx_act;
  rmsnorm_backward(xs_[dims_.n_layers], store_.param(norm_), rstdf_, dxf, dx, store_.grad(norm_), false, dx_copy);
  for (int l = dims_.n_layers - 1; l >= 0; --l) {
    ProfileScope scope(profiling_active() ? "layers." + std::to_string(l) : std::string());
    Layer& L = *layers_[l];
    size_t mark = ar.mark();
    Tensor dn = arena_tensor(ar, {N, D});
    // Recomputation rewrites rstd with the same bits it had.
    if (recompute_norms_) rmsnorm_forward(L.h, store_.param(L.ffn_norm), dims_.norm_eps, L.n2, L.rstd2);
    {
      LINGUA_PROFILE_SCOPE("feed_forward");
      L.ffn->backward(L.n2, dx_act, dn, ctx);
    }
    rmsnorm_backward(L.h, store_.param(L.ffn_norm), L.rstd2, dn, dx, store_.grad(L.ffn_norm), true, dx_copy);
    if (recompute_norms_) rmsnorm_forward(xs_[l], store_.param(L.attn_norm), dims_.norm_eps, L.n1, L.rstd1);
    {
      LINGUA_PROFILE_SCOPE("attention");
      L.attention.backward(L.n1, dx_act, dn, ctx);
    }
    rmsnorm_backward(xs_[l], store_.param(L.attn_norm), L.rstd1, dn, dx, store_.grad(L.attn_norm), true, dx_copy);
    ar.release_to(mark);
  }
  embedding_backward(tok, dx, store_.grad(tok_emb_));
  return ls;
}

LossSum Transformer::forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T, float* nll_out) {
  ensure_arena(B, T);
  int64_t N = (int64_t)B * T;
  StepContext ctx = context(tokens, B, T, 0, false);
  Tensor tok = device_ids(tokens, N, 0), tgt = device_ids(targets, N, 1);
  forward_layers(tok, B, T, ctx);
  Tensor nll = arena_tensor(arena_, {N});
  LossSum ls;
  ls.nll = output_cross_entropy(xf_, store_.compute_param(output_), tgt, nll, 1.0f, Tensor(), Tensor());
  if (nll_out) copy_tensor(Tensor(nll_out, {N}), nll);
  for (int64_t i = 0; i < N; ++i) ls.tokens += targets[i] >= 0;
  return ls;
}

void Transformer::forward_logits(const int32_t* tokens, int T, float* logits) {
  ensure_arena(1, T, arena_bytes((int64_t)T * dims_.vocab));
  StepContext ctx = context(tokens, 1, T, 0, false);
  forward_layers(device_ids(tokens, T, 0), 1, T, ctx);
  Tensor out = arena_tensor(arena_, {(int64_t)T, (int64_t)dims_.vocab});
  linear_forward(xf_, store_.compute_param(output_), out);
  copy_tensor(Tensor(logits, {(int64_t)T, (int64_t)dims_.vocab}), out);
}

void Transformer::forward_decode(const int32_t* tokens, int T, KVCache& cache, float* logits) {
  LINGUA_CHECK(cache.len + T <= dims_.max_seqlen, "generation: ", cache.len + T,
               " tokens exceed model.max_seqlen (", dims_.max_seqlen, ")");
  ensure_arena(1, T, arena_bytes(dims_.vocab) + 4 * arena_bytes(dims_.dim));
  Arena& ar = arena_;
  int64_t D = dims_.dim;
  StepContext ctx = context(tokens, 1, T, cache.len, false);
  Tensor x = arena_tensor(ar, {T, D}), n = arena_tensor(ar, {T, D}, act_), r = arena_tensor(ar, {T});
  embedding_forward(device_ids(tokens, T, 0), store_.param(tok_emb_), x);
  for (int l = 0; l < dims_.n_layers; ++l) {
    Layer& L = *layers_[l];
    rmsnorm_forward(x, store_.param(L.attn_norm), dims_.norm_eps, n, r);
    L.attention.forward_cached(n, x, x, cache, l, ctx);  // x += attention(n)
    rmsnorm_forward(x, store_.param(L.ffn_norm), dims_.norm_eps, n, r);
    size_t mark = ar.mark();
    L.ffn->forward(n, x, x, ctx);  // x += ffn(n)
    ar.release_to(mark);
  }
  cache.len += T;
  // Only the last position's logits are needed.
  Tensor last(static_cast<float*>(x.data) + (T - 1) * D, {1, D}, DType::f32, x.device);
  Tensor nl = arena_tensor(ar, {1, D}, act_), rl = arena_tensor(ar, {1});
  Tensor out = arena_tensor(ar, {1, (int64_t)dims_.vocab});
  rmsnorm_forward(last, store_.param(norm_), dims_.norm_eps, nl, rl);
  linear_forward(nl, store_.compute_param(output_), out);
  copy_tensor(Tensor(logits, {1, (int64_t)dims_.vocab}), out);
}

ParamCounts Transformer::param_counts() const {
  ParamCounts c;
  for (auto& p : store_.infos()) {
    c.total += p.numel;
    if (p.embedding) c.embedding += p.numel;
  }
  c.active_non_embedding = c.total - c.embedding;
  if (dims_.weight_tying) c.active_non_embedding += (int64_t)dims_.vocab * dims_.dim;  // the head still multiplies
  return c;
}

double Transformer::flops_per_token(int seq_len) const {
  return 6.0 * (double)param_counts().active_non_embedding + 6.0 * dims_.n_layers * dims_.dim * (double)seq_len;
}

}  // namespace lingua
