#include "lingua/model/transformer.h"

#include <algorithm>
#include <cmath>

#include "lingua/core/profiler.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/op_checks.h"
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

  // What the block keeps itself, besides its modules: n1 and n2 (activation dtype) unless
  // recomputed (then shared), their rstd, h (the f32 residual after attention) and the layer's
  // output (the next layer's input, f32).
  size_t own_bytes(int64_t N, int64_t D, DType act, bool shared_norms) const {
    return (shared_norms ? 0 : 2 * arena_bytes(N * D, act)) + 2 * arena_bytes(N * D) + 2 * arena_bytes(N);
  }
  // Transient memory of the block's backward (dn) and of its modules.
  size_t scratch_bytes(int64_t B, int64_t T, int64_t D, DType act) const {
    int64_t N = B * T;
    return arena_bytes(N * D, act) + std::max(attention.scratch_bytes(B, T, act), ffn->scratch_bytes(N, act));
  }
};

Transformer::Transformer(const ModelConfig& cfg, const ModelDims& dims)
    : dims_(dims), recompute_norms_(cfg.recompute_norms) {
  float emb_std = (float)cfg.init_base_std.value_or(std::pow(dims.dim, -0.5));
  // Gathered from the fp32 weights; the matmul of a tied head reads the bf16 copy.
  tok_emb_ = store_.add("tok_embeddings.weight", {dims.vocab, dims.dim}, {ParamInit::trunc_normal, emb_std},
                        "default", /*embedding=*/true, /*compute_copy=*/dims.weight_tying);
  rope_ = rope_table(dims.max_seqlen, dims.head_dim, dims.rope_theta);
  for (int i = 0; i < dims.n_layers; ++i) {
    layers_.push_back(std::make_unique<Layer>(store_, dims, cfg, i, rope_));
    layer_param_begin_.push_back(store_.info(layers_.back()->attn_norm).offset);
  }
  norm_ = store_.add("norm.weight", {dims.dim}, {ParamInit::ones});
  layer_param_begin_.push_back(store_.info(norm_).offset);
  output_ = dims.weight_tying ? tok_emb_
                              : store_.add("output.weight", {dims.vocab, dims.dim}, {ParamInit::trunc_normal, emb_std});
  store_.finalize();
  store_.init((uint64_t)cfg.seed);
  if (!dims.stem_layers.empty()) {
    rows_seen_host_.assign(dims.vocab, 0);
    rows_seen_ = Tensor(rows_seen_host_.data(), {(int64_t)dims.vocab}, DType::i32, Device::cpu);
  }
}

Transformer::~Transformer() = default;

void Transformer::to_device(Device device) {
  if (device == this->device()) return;
  LINGUA_CHECK(!grads_in_activations_, "internal error: move the model before placing its gradients");
  store_.to_device(device);
  if (is_given(rows_seen_)) {
    rows_seen_dev_ = DeviceBuffer((size_t)dims_.vocab * sizeof(int32_t));
    rows_seen_dev_.zero();
    rows_seen_ = Tensor(rows_seen_dev_.data(), {(int64_t)dims_.vocab}, DType::i32, Device::cuda);
  }
  memory_ = Arena(device);
  scratch_ = Arena(device);
  saved_ = Arena(device);
  act_ = device == Device::cuda ? DType::bf16 : DType::f32;
}

Transformer::MemoryPlan Transformer::plan(int B, int T, bool training, size_t extra_bytes) const {
  const int64_t N = (int64_t)B * T, D = dims_.dim;
  const bool shared_norms = training && recompute_norms_;
  MemoryPlan p;
  // Saved region, in the order forward_layers takes it: the embedding output and the shared norm
  // buffer, then layer by layer, then the final norm's output and rstd.
  size_t off = arena_bytes(N * D) + (shared_norms ? arena_bytes(N * D, act_) : 0);
  size_t scratch = 0;
  for (auto& l : layers_) {
    off += l->own_bytes(N, D, act_, shared_norms);
    const size_t attn = l->attention.saved_bytes(B, T, act_), ffn = l->ffn->saved_bytes(N, act_);
    if (training) {
      off += attn + ffn;
      scratch = std::max(scratch, l->scratch_bytes(B, T, D, act_));
    } else {  // a forward that saves nothing keeps the modules' tensors in scratch
      scratch = std::max<size_t>(
          {scratch, attn + l->attention.scratch_bytes(B, T, act_), ffn + l->ffn->scratch_bytes(N, act_)});
    }
    p.layer_end.push_back(off);
  }
  off += arena_bytes(N * D, act_) + arena_bytes(N);
  p.saved_end = off;
  p.saved = off + extra_bytes;
  // Backward passes the final norm's input gradient (activation dtype) and the residual gradient
  // (f32, and in the activation dtype when that is not f32) between layers; forward_loss keeps
  // per-token losses.
  if (training)
    scratch += arena_bytes(N * D, act_) + arena_bytes(N * D) + (act_ == DType::f32 ? 0 : arena_bytes(N * D, act_));
  else
    scratch += arena_bytes(N);
  p.scratch = scratch;
  if (training) {
    // Each gradient range must start past the activations still alive when it is first written:
    // layer l's past the saved memory of layers 0..l; the head's (and a tied embedding's) past all
    // of it (the cross-entropy writes them first); an untied embedding's anywhere (written last).
    auto need = [](size_t live_end, int64_t first_float) {
      size_t at = (size_t)first_float * sizeof(float);
      return live_end > at ? live_end - at : 0;
    };
    size_t g = dims_.weight_tying ? need(p.saved_end, 0) : 0;
    for (size_t l = 0; l < layers_.size(); ++l) g = std::max(g, need(p.layer_end[l], layer_param_begin_[l]));
    g = std::max(g, need(p.saved_end, layer_param_begin_.back()));
    p.grads_offset = Arena::round_up(g);
  }
  return p;
}

size_t Transformer::activation_bytes(int B, int T) const {
  MemoryPlan p = plan(B, T, true, 0);
  return p.scratch + p.saved;
}

void Transformer::ensure_arena(int B, int T, bool training, size_t extra_bytes) {
  LINGUA_CHECK(T <= dims_.max_seqlen, "sequence length ", T, " exceeds model.max_seqlen (", dims_.max_seqlen, ")");
  plan_ = plan(B, T, training, extra_bytes);
  const bool place = training && grads_in_activations_;
  const size_t grad_bytes = (size_t)store_.total() * sizeof(float);
  const bool grads_ok = !place || (store_.device_grads() && grads_offset_ >= plan_.grads_offset &&
                                   grads_offset_ + grad_bytes <= saved_.capacity());
  if (memory_.capacity() == 0 || plan_.scratch > scratch_.capacity() || plan_.saved > saved_.capacity() || !grads_ok) {
    // Grow (never shrink) each region; the gradients move with the memory (they are only valid
    // from a backward to the next forward).
    size_t sc = Arena::round_up(std::max(plan_.scratch, scratch_.capacity()));
    size_t sv = std::max(plan_.saved, saved_.capacity());
    if (place) grads_offset_ = plan_.grads_offset;
    if (grads_in_activations_) sv = std::max(sv, grads_offset_ + grad_bytes);
    sv = Arena::round_up(sv);
    memory_.reserve(sc + sv);
    ++memory_epoch_;
    scratch_ = Arena::view(memory_.base(), sc, memory_.device());
    saved_ = Arena::view(memory_.base() + sc, sv, memory_.device());
    if (grads_in_activations_) place_grads();
  }
  scratch_.reset();
  saved_.reset();
}

void Transformer::place_grads() {
  store_.use_external_grads(reinterpret_cast<float*>(saved_.base() + grads_offset_));
}

void Transformer::set_grads_in_activations(bool on) {
  if (on == grads_in_activations_) return;
  grads_in_activations_ = on;
  grads_offset_ = 0;
  if (on) {
    // Free the store's own gradients now (peak memory); the next training step places them.
    store_.use_external_grads(nullptr);
    memory_.reserve(0);
    scratch_ = Arena(memory_.device());
    saved_ = Arena(memory_.device());
  } else {
    store_.use_own_grads();
  }
}

void Transformer::zero_grads() {
  if (!grads_in_activations_) store_.zero_grads();
}

void Transformer::zero_grads_before_write(int64_t begin, int64_t end) {
  if (grads_in_activations_) store_.zero_grads(begin, end);
}

void Transformer::check_ids(const int32_t* ids, int64_t n, bool targets) const {
  for (int64_t i = 0; i < n; ++i)
    LINGUA_CHECK(ids[i] < dims_.vocab && (ids[i] >= 0 || targets), targets ? "target" : "input", " token id ", ids[i],
                 " at position ", i, " is outside the vocabulary [0, ", dims_.vocab, ")");
}

Tensor Transformer::device_ids(const int32_t* ids, int64_t n, int slot) {
  check_ids(ids, n, slot == 1);
  if (device() == Device::cpu) return Tensor(ids, {n});
  DeviceBuffer& b = ids_dev_[slot];
  if (b.bytes() < (size_t)n * 4) b = DeviceBuffer((size_t)n * 4);
  copy_to_device(b.data(), ids, (size_t)n * 4);
  return Tensor(b.data(), {n}, DType::i32, Device::cuda);
}

StepContext Transformer::context(const Tensor& tokens, int B, int T, int pos0, bool save) {
  StepContext ctx;
  ctx.saved = &saved_;
  ctx.scratch = &scratch_;
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
  Arena& ar = saved_;
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
    // The plan places gradients by these offsets: a mismatch is a bug, caught before it corrupts.
    LINGUA_CHECK(ar.mark() == plan_.layer_end[l], "internal error: layer ", l, " saved ", ar.mark(),
                 " bytes, the memory plan says ", plan_.layer_end[l]);
  }
  xf_ = arena_tensor(ar, {N, D}, act_);
  rstdf_ = arena_tensor(ar, {N});
  LINGUA_CHECK(ar.mark() == plan_.saved_end, "internal error: forward saved ", ar.mark(),
               " bytes, the memory plan says ", plan_.saved_end);
  rmsnorm_forward(xs_[dims_.n_layers], store_.param(norm_), dims_.norm_eps, xf_, rstdf_);
}

LossSum Transformer::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale) {
  stage_batch(0, tokens, targets, B, T);
  forward_backward_staged(0, loss_scale);
  return take_loss();
}

Tensor Transformer::StagedBatch::ids(int which) const {
  const int64_t n = (int64_t)B * T;
  if (dev.data()) return Tensor(dev.as<int32_t>() + which * n, {n}, DType::i32, Device::cuda);
  return Tensor(host.data() + which * n, {n});
}

void Transformer::stage_batch(int slot, const int32_t* tokens, const int32_t* targets, int B, int T) {
  LINGUA_CHECK(slot >= 0, "internal error: negative batch slot");
  if ((int)staged_.size() <= slot) staged_.resize(slot + 1);
  StagedBatch& sb = staged_[slot];
  const int64_t n = (int64_t)B * T;
  sb.B = B;
  sb.T = T;
  // The GPU cannot report a bad id without waiting for the step: check here.
  check_ids(tokens, n, false);
  check_ids(targets, n, true);
  if (slot == 0) loss_tokens_ = 0;
  for (int64_t i = 0; i < n; ++i) loss_tokens_ += targets[i] >= 0;
  if (device() == Device::cuda) {
    if (sb.dev.bytes() < (size_t)n * 8) {
      sb.dev = DeviceBuffer((size_t)n * 8);
      ++memory_epoch_;
    }
    // Pageable sources: the copy is staged before the call returns, so the caller's arrays may change.
    copy_to_device_async(sb.dev.as<int32_t>(), tokens, (size_t)n * 4);
    copy_to_device_async(sb.dev.as<int32_t>() + n, targets, (size_t)n * 4);
  } else {
    sb.host.assign(tokens, tokens + n);
    sb.host.insert(sb.host.end(), targets, targets + n);
  }
}

LossSum Transformer::take_loss() {
  LossSum ls;
  ls.tokens = loss_tokens_;
  if (device() == Device::cuda) copy_to_host(&ls.nll, loss_dev_.data(), sizeof(double));
  else ls.nll = loss_host_;
  return ls;
}

void Transformer::forward_backward_staged(int slot, float loss_scale) {
  LINGUA_CHECK(slot < (int)staged_.size() && staged_[slot].B > 0, "internal error: batch slot ", slot, " not staged");
  const StagedBatch& sb = staged_[slot];
  const int B = sb.B, T = sb.T;
  ensure_arena(B, T, true);
  int64_t N = (int64_t)B * T, D = dims_.dim;
  Tensor tok = sb.ids(0), tgt = sb.ids(1);
  if (is_given(rows_seen_)) {
    if (slot == 0) {
      if (device() == Device::cuda) cuda_memset_zero(rows_seen_.data, rows_seen_host_.size() * sizeof(int32_t));
      else std::fill(rows_seen_host_.begin(), rows_seen_host_.end(), 0);
    }
    mark_rows(tok, rows_seen_);
  }
  StepContext ctx = context(tok, B, T, 0, true);
  {
    LINGUA_PROFILE_SCOPE("forward");
    forward_layers(tok, B, T, ctx);
  }
  LINGUA_PROFILE_SCOPE("backward");
  Arena& ar = scratch_;
  const int64_t L = dims_.n_layers;
  Tensor dxf = arena_tensor(ar, {N, D}, act_);
  // Gradients in the activations are zeroed just before their first write (see plan()).
  zero_grads_before_write(layer_param_begin_[L], store_.total());
  if (dims_.weight_tying) zero_grads_before_write(0, layer_param_begin_[0]);
  double* loss_sum = &loss_host_;
  if (device() == Device::cuda) {
    if (!loss_dev_.data()) loss_dev_ = DeviceBuffer(sizeof(double));
    loss_sum = loss_dev_.as<double>();
  }
  output_cross_entropy_sum(xf_, store_.compute_param(output_), tgt, Tensor(), loss_scale, dxf, store_.grad(output_),
                           loss_sum, slot > 0);
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
    zero_grads_before_write(layer_param_begin_[l], layer_param_begin_[l + 1]);
    size_t mark = ar.mark();
    Tensor dn = arena_tensor(ar, {N, D}, act_);  // a module's input gradient, as its matmul writes it
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
  if (!dims_.weight_tying) zero_grads_before_write(0, layer_param_begin_[0]);
  embedding_backward(tok, dx, store_.grad(tok_emb_));
}

LossSum Transformer::forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T, float* nll_out) {
  ensure_arena(B, T, false);
  int64_t N = (int64_t)B * T;
  Tensor tok = device_ids(tokens, N, 0), tgt = device_ids(targets, N, 1);
  StepContext ctx = context(tok, B, T, 0, false);
  forward_layers(tok, B, T, ctx);
  Tensor nll = arena_tensor(scratch_, {N});
  LossSum ls;
  ls.nll = output_cross_entropy(xf_, store_.compute_param(output_), tgt, nll, 1.0f, Tensor(), Tensor());
  if (nll_out) copy_tensor(Tensor(nll_out, {N}), nll);
  for (int64_t i = 0; i < N; ++i) ls.tokens += targets[i] >= 0;
  return ls;
}

void Transformer::forward_logits(const int32_t* tokens, int T, float* logits) {
  ensure_arena(1, T, false, arena_bytes((int64_t)T * dims_.vocab));
  Tensor tok = device_ids(tokens, T, 0);
  StepContext ctx = context(tok, 1, T, 0, false);
  forward_layers(tok, 1, T, ctx);
  Tensor out = arena_tensor(saved_, {(int64_t)T, (int64_t)dims_.vocab});
  linear_forward(xf_, store_.compute_param(output_), out);
  copy_tensor(Tensor(logits, {(int64_t)T, (int64_t)dims_.vocab}), out);
}

void Transformer::forward_decode(const int32_t* tokens, int T, KVCache& cache, float* logits) {
  LINGUA_CHECK(cache.len + T <= dims_.max_seqlen, "generation: ", cache.len + T,
               " tokens exceed model.max_seqlen (", dims_.max_seqlen, ")");
  ensure_arena(1, T, false, arena_bytes(dims_.vocab) + 4 * arena_bytes(dims_.dim));
  Arena& ar = saved_;
  int64_t D = dims_.dim;
  Tensor tok = device_ids(tokens, T, 0);
  StepContext ctx = context(tok, 1, T, cache.len, false);
  Tensor x = arena_tensor(ar, {T, D}), n = arena_tensor(ar, {T, D}, act_), r = arena_tensor(ar, {T});
  embedding_forward(tok, store_.param(tok_emb_), x);
  for (int l = 0; l < dims_.n_layers; ++l) {
    Layer& L = *layers_[l];
    rmsnorm_forward(x, store_.param(L.attn_norm), dims_.norm_eps, n, r);
    L.attention.forward_cached(n, x, x, cache, l, ctx);  // x += attention(n)
    rmsnorm_forward(x, store_.param(L.ffn_norm), dims_.norm_eps, n, r);
    L.ffn->forward(n, x, x, ctx);  // x += ffn(n)
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
    if (p.group == kStemGroup) c.stem_tables += p.numel;
  }
  c.active_non_embedding = c.total - c.embedding;
  if (dims_.weight_tying) c.active_non_embedding += (int64_t)dims_.vocab * dims_.dim;  // the head still multiplies
  return c;
}

double Transformer::flops_per_token(int seq_len) const {
  return 6.0 * (double)param_counts().active_non_embedding + 6.0 * dims_.n_layers * dims_.dim * (double)seq_len;
}

}  // namespace lingua
