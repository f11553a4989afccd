#include "lingua/model/transformer.h"

#include <cmath>
#include <cstring>

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
  Tensor n1, rstd1, h, n2, rstd2;  // saved for backward

  Layer(ParamStore& s, const ModelDims& d, const ModelConfig& cfg, int i, const RopeTable& rope)
      : attn_norm(s.add("layers." + std::to_string(i) + ".attention_norm.weight", {d.dim}, {ParamInit::ones})),
        ffn_norm(s.add("layers." + std::to_string(i) + ".ffn_norm.weight", {d.dim}, {ParamInit::ones})),
        attention(s, d, cfg, i, "layers." + std::to_string(i) + ".attention.", rope),
        ffn(make_ffn(cfg.ffn, FfnBuildArgs{s, d, cfg, i, "layers." + std::to_string(i) + ".feed_forward."})) {}

  size_t saved_floats(int64_t B, int64_t T, int64_t D) const {
    int64_t N = B * T;
    return 3 * arena_floats(N * D) + 2 * arena_floats(N) + attention.saved_floats(B, T) + ffn->saved_floats(N);
  }
  size_t scratch_floats(int64_t B, int64_t T, int64_t D) const {
    int64_t N = B * T;
    return arena_floats(N * D) + std::max(attention.scratch_floats(B, T), ffn->scratch_floats(N));
  }
};

Transformer::Transformer(const ModelConfig& cfg, const ModelDims& dims) : dims_(dims) {
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

size_t Transformer::activation_floats(int B, int T) const {
  int64_t N = (int64_t)B * T, D = dims_.dim;
  size_t saved = (dims_.n_layers + 1) * arena_floats(N * D) + arena_floats(N * D) + 2 * arena_floats(N);
  size_t scratch = 0;
  for (auto& l : layers_) {
    saved += l->saved_floats(B, T, D);
    scratch = std::max(scratch, l->scratch_floats(B, T, D));
  }
  // Backward keeps three residual-gradient buffers (final norm, dx, dh) besides a layer's scratch.
  return saved + scratch + 3 * arena_floats(N * D);
}

void Transformer::ensure_arena(int B, int T) {
  LINGUA_CHECK(T <= dims_.max_seqlen, "sequence length ", T, " exceeds model.max_seqlen (", dims_.max_seqlen, ")");
  size_t need = activation_floats(B, T);
  if (arena_.capacity() < need) arena_.reserve(need);
  arena_.reset();
}

void Transformer::forward_layers(const int32_t* tokens, int B, int T, StepContext& ctx) {
  int64_t N = (int64_t)B * T, D = dims_.dim;
  Arena& ar = arena_;
  xs_.assign(dims_.n_layers + 1, Tensor());
  xs_[0] = arena_tensor(ar, {N, D});
  embedding_forward(Tensor(tokens, {N}), store_.param(tok_emb_), xs_[0]);
  for (int l = 0; l < dims_.n_layers; ++l) {
    Layer& L = *layers_[l];
    const Tensor& x = xs_[l];
    L.n1 = arena_tensor(ar, {N, D});
    L.rstd1 = arena_tensor(ar, {N});
    L.h = arena_tensor(ar, {N, D});
    L.n2 = arena_tensor(ar, {N, D});
    L.rstd2 = arena_tensor(ar, {N});
    rmsnorm_forward(x, store_.param(L.attn_norm), dims_.norm_eps, L.n1, L.rstd1);
    L.attention.forward(L.n1, L.h, ctx);
    float* h = L.h.f32();
    const float* xp = x.f32();
    for (int64_t i = 0; i < N * D; ++i) h[i] += xp[i];
    rmsnorm_forward(L.h, store_.param(L.ffn_norm), dims_.norm_eps, L.n2, L.rstd2);
    xs_[l + 1] = arena_tensor(ar, {N, D});
    L.ffn->forward(L.n2, xs_[l + 1], ctx);
    float* o = xs_[l + 1].f32();
    for (int64_t i = 0; i < N * D; ++i) o[i] += h[i];
  }
  xf_ = arena_tensor(ar, {N, D});
  rstdf_ = arena_tensor(ar, {N});
  rmsnorm_forward(xs_[dims_.n_layers], store_.param(norm_), dims_.norm_eps, xf_, rstdf_);
}

LossSum Transformer::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale) {
  ensure_arena(B, T);
  int64_t N = (int64_t)B * T, D = dims_.dim;
  StepContext ctx{&arena_, tokens, B, T, 0, true};
  forward_layers(tokens, B, T, ctx);
  Arena& ar = arena_;
  Tensor dxf = arena_tensor(ar, {N, D});
  LossSum ls;
  ls.nll = output_cross_entropy(xf_, store_.param(output_), Tensor(targets, {N}), Tensor(), loss_scale, dxf,
                                store_.grad(output_));
  for (int64_t i = 0; i < N; ++i) ls.tokens += targets[i] >= 0;
  // Backward through the final norm and the layers. dx is the gradient of the residual stream.
  Tensor dx = arena_tensor(ar, {N, D});
  Tensor dh = arena_tensor(ar, {N, D});
  rmsnorm_backward(xs_[dims_.n_layers], store_.param(norm_), rstdf_, dxf, dx, store_.grad(norm_));
  for (int l = dims_.n_layers - 1; l >= 0; --l) {
    Layer& L = *layers_[l];
    size_t mark = ar.mark();
    Tensor dn = arena_tensor(ar, {N, D});
    // out = h + ffn(n2): dh = dx + d(ffn_norm)(dn2)
    L.ffn->backward(L.n2, dx, dn, ctx);
    std::memcpy(dh.data, dx.data, N * D * sizeof(float));
    rmsnorm_backward(L.h, store_.param(L.ffn_norm), L.rstd2, dn, dh, store_.grad(L.ffn_norm), true);
    // h = x + attn(n1): dx = dh + d(attention_norm)(dn1)
    L.attention.backward(L.n1, dh, dn, ctx);
    std::memcpy(dx.data, dh.data, N * D * sizeof(float));
    rmsnorm_backward(xs_[l], store_.param(L.attn_norm), L.rstd1, dn, dx, store_.grad(L.attn_norm), true);
    ar.release_to(mark);
  }
  embedding_backward(Tensor(tokens, {N}), dx, store_.grad(tok_emb_));
  return ls;
}

LossSum Transformer::forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T, float* nll_out) {
  ensure_arena(B, T);
  int64_t N = (int64_t)B * T;
  StepContext ctx{&arena_, tokens, B, T, 0, false};
  forward_layers(tokens, B, T, ctx);
  Tensor nll = nll_out ? Tensor(nll_out, {N}) : arena_tensor(arena_, {N});
  LossSum ls;
  ls.nll = output_cross_entropy(xf_, store_.param(output_), Tensor(targets, {N}), nll, 1.0f, Tensor(), Tensor());
  for (int64_t i = 0; i < N; ++i) ls.tokens += targets[i] >= 0;
  return ls;
}

void Transformer::forward_logits(const int32_t* tokens, int T, float* logits) {
  ensure_arena(1, T);
  StepContext ctx{&arena_, tokens, 1, T, 0, false};
  forward_layers(tokens, 1, T, ctx);
  linear_forward(xf_, store_.param(output_), Tensor(logits, {(int64_t)T, (int64_t)dims_.vocab}));
}

void Transformer::forward_decode(const int32_t* tokens, int T, KVCache& cache, float* logits) {
  LINGUA_CHECK(cache.len + T <= dims_.max_seqlen, "generation: ", cache.len + T,
               " tokens exceed model.max_seqlen (", dims_.max_seqlen, ")");
  ensure_arena(1, T);
  Arena& ar = arena_;
  int64_t D = dims_.dim;
  StepContext ctx{&arena_, tokens, 1, T, cache.len, false};
  Tensor x = arena_tensor(ar, {T, D}), n = arena_tensor(ar, {T, D}), r = arena_tensor(ar, {T});
  Tensor y = arena_tensor(ar, {T, D});
  embedding_forward(Tensor(tokens, {T}), store_.param(tok_emb_), x);
  for (int l = 0; l < dims_.n_layers; ++l) {
    Layer& L = *layers_[l];
    rmsnorm_forward(x, store_.param(L.attn_norm), dims_.norm_eps, n, r);
    L.attention.forward_cached(n, y, cache, l, ar);
    float *xp = x.f32(), *yp = y.f32();
    for (int64_t i = 0; i < T * D; ++i) xp[i] += yp[i];
    rmsnorm_forward(x, store_.param(L.ffn_norm), dims_.norm_eps, n, r);
    size_t mark = ar.mark();
    L.ffn->forward(n, y, ctx);
    ar.release_to(mark);
    for (int64_t i = 0; i < T * D; ++i) xp[i] += yp[i];
  }
  cache.len += T;
  // Only the last position's logits are needed.
  Tensor last(x.f32() + (T - 1) * D, {1, D});
  Tensor nl = arena_tensor(ar, {1, D}), rl = arena_tensor(ar, {1});
  rmsnorm_forward(last, store_.param(norm_), dims_.norm_eps, nl, rl);
  linear_forward(nl, store_.param(output_), Tensor(logits, {1, (int64_t)dims_.vocab}));
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
