#include "lingua/exec/executor.h"

#include <algorithm>

#include "lingua/core/profiler.h"

namespace lingua {

namespace {

// The model's module tokens as the executor's first hook: their rows are set before each block,
// and their gradients are complete before any later hook (data-parallel reduction) reads them.
class ModuleTokenHooks final : public LayerHooks {
 public:
  explicit ModuleTokenHooks(const ModuleTokens& m) : m_(m) {}
  void before_forward(int l, const Tensor& x, const StepContext& ctx) override { m_.forward_rows(l, x, ctx); }
  void after_backward(int l, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) override {
    m_.backward_rows(l, dx, dx_act, ctx);
  }

 private:
  const ModuleTokens& m_;
};

}  // namespace

Executor::Executor(Transformer& model) : model_(model) {
  memory_ = Arena(model.device());
  scratch_ = Arena(model.device());
  saved_ = Arena(model.device());
  if (const ModuleTokens* m = model.module_tokens(); m && m->prefix_rows() > 0) {
    module_hooks_ = std::make_unique<ModuleTokenHooks>(*m);
    add_hooks(module_hooks_.get());
    set_prefix_rows(m->prefix_rows());
  }
  // Gradients left unplaced by an executor that kept them in its step memory: the store's own.
  if (model.params().external_grads()) model.params().use_own_grads();
}

Executor::~Executor() {
  // Gradients placed in the step memory die with it (no allocation here: a later executor gives
  // the store its own buffer back).
  if (grads_in_activations_) model_.params().use_external_grads(nullptr);
}

// A captured step bakes in the hooks' work and the row layout: changing them moves the epoch.
void Executor::add_hooks(LayerHooks* hooks) {
  hooks_.push_back(hooks);
  order_hooks();
}

void Executor::remove_hooks(LayerHooks* hooks) {
  hooks_.erase(std::remove(hooks_.begin(), hooks_.end(), hooks), hooks_.end());
  order_hooks();
}

// Model hooks nest around the block (the last added innermost); parallel hooks follow them in
// every event, in the order added (hooks.h).
void Executor::order_hooks() {
  std::vector<LayerHooks*> model, parallel;
  for (LayerHooks* h : hooks_) (h->parallel() ? parallel : model).push_back(h);
  before_ = model;
  after_.assign(model.rbegin(), model.rend());
  for (LayerHooks* h : parallel) before_.push_back(h), after_.push_back(h);
  ++memory_epoch_;
}

void Executor::weights_gathered(int layer, const StepContext& ctx) {
  for (LayerHooks* h : before_) h->weights_gathered(layer, ctx);
}

void Executor::set_prefix_rows(int prefix) {
  LINGUA_CHECK(prefix >= 0, "prefix rows must be >= 0, got ", prefix);
  if (prefix != prefix_) ++memory_epoch_;
  prefix_ = prefix;
}

SeqLayout Executor::layout(int B, int T) const { return SeqLayout{B, T, prefix_}; }

uint64_t Executor::memory_epoch() const { return memory_epoch_ + (model_.params().layout_epoch() << 32); }

void Executor::update_grad_ranges() const {
  const ParamStore& s = model_.params();
  const int stages = model_.n_layers() + 2;
  grad_ranges_.assign(stages, GradRange{});
  std::vector<bool> seen(stages, false);
  for (int id : s.ids()) {
    const ParamInfo& p = s.info(id);
    if (p.grad_offset < 0) continue;
    const int stage = model_.stage_of(id);
    GradRange& r = grad_ranges_[stage];
    if (!seen[stage]) r = {p.grad_offset, p.grad_offset};
    seen[stage] = true;
    r.begin = std::min(r.begin, p.grad_offset);
    r.end = std::max(r.end, p.grad_offset + p.numel);
  }
  // Zeroing a stage's range before its first write must not touch another stage's gradients.
  for (int a = 0; a < stages; ++a)
    for (int b = a + 1; b < stages; ++b) {
      const GradRange &x = grad_ranges_[a], &y = grad_ranges_[b];
      LINGUA_CHECK(x.begin == x.end || y.begin == y.end || x.end <= y.begin || y.end <= x.begin,
                   "internal error: the gradients of stages ", a, " and ", b, " interleave in the layout");
    }
  layout_epoch_ = s.layout_epoch();
}

Executor::MemoryPlan Executor::plan(const SeqLayout& seq, bool training, size_t extra_bytes, bool decoding) const {
  const int64_t N = seq.rows(), NT = seq.token_rows(), D = model_.dims().dim;
  const DType act = model_.act_dtype();
  const bool shared_norms = training && model_.recompute_norms();
  const bool prefix = seq.prefix > 0;
  MemoryPlan p;
  if (decoding) {
    LINGUA_ASSERT(!training);
    // The residual stream x, then the extra bytes (the last rows and their logits); in scratch the
    // token rows' embeddings (with a prefix), a block's transient memory, then the head's norm.
    p.saved_end = arena_bytes(N * D);
    p.saved = p.saved_end + extra_bytes;
    p.scratch = std::max(prefix ? arena_bytes(NT * D) : 0, arena_bytes(seq.B * D, act) + arena_bytes(seq.B));
    for (int l = 0; l < model_.n_layers(); ++l)
      p.scratch = std::max(p.scratch, model_.block(l).scratch_bytes(seq, act, false));
    return p;
  }
  // Saved region, in the order forward_stages takes it: the embedding output and the shared norm
  // buffer, then block by block, then the head's input rows (with a prefix) and the final norm's
  // output and rstd.
  size_t off = arena_bytes(N * D) + (shared_norms ? arena_bytes(N * D, act) : 0);
  size_t scratch = prefix ? arena_bytes(NT * D) : 0;  // the embedding's token rows
  for (int l = 0; l < model_.n_layers(); ++l) {
    const Block& b = model_.block(l);
    off += b.saved_bytes(seq, act, training, shared_norms);
    scratch = std::max(scratch, b.scratch_bytes(seq, act, training));
    p.layer_end.push_back(off);
  }
  off += (prefix ? arena_bytes(NT * D) : 0) + model_.head().saved_bytes(NT, act);
  p.saved_end = off;
  p.saved = off + extra_bytes;
  // Backward passes the head's gradient and the residual gradient (f32, and in the activation
  // dtype when that is not f32) between blocks, with a prefix also the head's token rows of both;
  // forward_loss keeps per-token losses.
  scratch += model_.head().scratch_bytes(NT, act, training);
  if (training) {
    scratch += arena_bytes(N * D) + (act == DType::f32 ? 0 : arena_bytes(N * D, act));
    if (prefix) scratch += arena_bytes(NT * D) + (act == DType::f32 ? 0 : arena_bytes(NT * D, act));
  }
  p.scratch = scratch;
  if (training) {
    // Each gradient range must start past the activations still alive when it is first written:
    // block l's past the saved memory of blocks 0..l; the head's (and a tied embedding's) past all
    // of it (the cross-entropy writes them first); an untied embedding's anywhere (written last).
    auto need = [](size_t live_end, const GradRange& r) {
      if (r.begin == r.end) return size_t(0);
      const size_t at = (size_t)r.begin * sizeof(float);
      return live_end > at ? live_end - at : 0;
    };
    const int L = model_.n_layers();
    size_t g = model_.dims().weight_tying ? need(p.saved_end, grad_ranges_[0]) : 0;
    for (int l = 0; l < L; ++l) g = std::max(g, need(p.layer_end[l], grad_ranges_[1 + l]));
    g = std::max(g, need(p.saved_end, grad_ranges_[L + 1]));
    p.grads_offset = Arena::round_up(g);
  }
  return p;
}

size_t Executor::activation_bytes(int B, int T) const {
  if (layout_epoch_ != model_.params().layout_epoch()) update_grad_ranges();
  MemoryPlan p = plan(layout(B, T), true, 0);
  return p.scratch + p.saved;
}

size_t Executor::host_training_bytes() const {
  const ParamStore& s = model_.params();
  return step_memory_bytes() +
         sizeof(float) * ((size_t)s.total() + (grads_in_activations_ ? 2 : 3) * (size_t)s.grad_total());
}

void Executor::ensure_arena(const SeqLayout& seq, bool training, size_t extra_bytes, bool decoding) {
  LINGUA_CHECK(seq.T <= model_.dims().max_seqlen, "sequence length ", seq.T, " exceeds model.max_seqlen (",
               model_.dims().max_seqlen, ")");
  ParamStore& store = model_.params();
  // Parameters came or went (a model feature's guides dropped, say): the step memory is sized
  // anew, so memory that only they needed is given back.
  if (layout_epoch_ != store.layout_epoch()) update_grad_ranges();
  const bool relaid = arena_layout_epoch_ != store.layout_epoch();
  arena_layout_epoch_ = store.layout_epoch();
  plan_ = plan(seq, training, extra_bytes, decoding);
  const bool place = training && grads_in_activations_;
  const size_t grad_bytes = (size_t)store.grad_total() * sizeof(float);
  const bool grads_ok = !place || (store.grads_data() && grads_offset_ >= plan_.grads_offset &&
                                   grads_offset_ + grad_bytes <= saved_.capacity());
  if (memory_.capacity() == 0 || plan_.scratch > scratch_.capacity() || plan_.saved > saved_.capacity() || !grads_ok ||
      relaid) {
    // Grow (never shrink, but after a new layout) each region; the gradients move with the memory
    // (they are only valid from a backward to the next forward).
    size_t sc = Arena::round_up(relaid ? plan_.scratch : std::max(plan_.scratch, scratch_.capacity()));
    size_t sv = relaid ? plan_.saved : std::max(plan_.saved, saved_.capacity());
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

void Executor::place_grads() {
  model_.params().use_external_grads(reinterpret_cast<float*>(saved_.base() + grads_offset_));
}

void Executor::set_grads_in_activations(bool on) {
  if (on == grads_in_activations_) return;
  grads_in_activations_ = on;
  grads_offset_ = 0;
  ++memory_epoch_;  // the gradients (and, when on, the step memory) move
  if (on) {
    // Free the store's own gradients now (peak memory); the next training step places them.
    model_.params().use_external_grads(nullptr);
    memory_.reserve(0);
    scratch_ = Arena(memory_.device());
    saved_ = Arena(memory_.device());
  } else {
    model_.params().use_own_grads();
  }
}

void Executor::zero_grads() {
  if (!grads_in_activations_) model_.params().zero_grads();
}

Tensor Executor::stage_grads(int stage) const {
  LINGUA_CHECK(stage >= 0 && stage < n_stages(), "internal error: stage ", stage, " of ", n_stages());
  if (layout_epoch_ != model_.params().layout_epoch()) update_grad_ranges();
  const GradRange& r = grad_ranges_[stage];
  float* g = model_.params().grads_data();
  if (r.begin == r.end || !g) return Tensor();
  return Tensor(g + r.begin, {r.end - r.begin}, DType::f32, device());
}

void Executor::zero_grads_before_write(int stage) {
  const GradRange& r = grad_ranges_[stage];
  if (grads_in_activations_ && r.begin < r.end) model_.params().zero_grads(r.begin, r.end);
}

void Executor::check_ids(const int32_t* ids, int64_t n, bool targets) const {
  const int vocab = model_.dims().vocab;
  for (int64_t i = 0; i < n; ++i)
    LINGUA_CHECK(ids[i] < vocab && (ids[i] >= 0 || targets), targets ? "target" : "input", " token id ", ids[i],
                 " at position ", i, " is outside the vocabulary [0, ", vocab, ")");
}

Tensor Executor::device_ids(const int32_t* ids, int64_t n, int which) {
  check_ids(ids, n, which == 1);
  if (device() == Device::cpu) return Tensor(ids, {n});
  DeviceBuffer& b = ids_dev_[which];
  if (b.bytes() < (size_t)n * 4) b = DeviceBuffer((size_t)n * 4);
  copy_to_device(b.data(), ids, (size_t)n * 4);
  return Tensor(b.data(), {n}, DType::i32, Device::cuda);
}

StepContext Executor::context(const Tensor& tokens, const SeqLayout& seq, int pos0, bool save) {
  StepContext ctx;
  ctx.saved = &saved_;
  ctx.scratch = &scratch_;
  ctx.act = model_.act_dtype();
  ctx.seq = seq;
  ctx.tokens = tokens;
  ctx.pos0 = pos0;
  ctx.save_for_backward = save;
  ctx.sliced_tables = sliced_tables_;
  return ctx;
}

Tensor Executor::token_rows(const Tensor& x, const SeqLayout& seq, const Tensor& compact) const {
  if (seq.prefix == 0) return x;
  copy_row_blocks(compact, seq.T, 0, x, seq.S(), seq.prefix, seq.B, seq.T);
  return compact;
}

void Executor::place_token_rows(const Tensor& x, const SeqLayout& seq, const Tensor& compact) const {
  zero_row_blocks(x, seq.S(), 0, seq.B, seq.prefix);
  copy_row_blocks(x, seq.S(), seq.prefix, compact, seq.T, 0, seq.B, seq.T);
}

void Executor::forward_stages(StepContext& ctx) {
  const SeqLayout& seq = ctx.seq;
  const int64_t N = seq.rows(), NT = seq.token_rows(), D = model_.dims().dim;
  const int L = model_.n_layers();
  Arena& ar = saved_;
  xs_.assign(L + 1, Tensor());
  xs_[0] = arena_tensor(ar, {N, D});
  if (model_.recompute_norms() && ctx.save_for_backward) ctx.shared_norm = arena_tensor(ar, {N, D}, ctx.act);
  if (seq.prefix == 0) {
    model_.embed(ctx.tokens, xs_[0]);
  } else {
    size_t mark = scratch_.mark();
    Tensor e = arena_tensor(scratch_, {NT, D});
    model_.embed(ctx.tokens, e);
    place_token_rows(xs_[0], seq, e);
    scratch_.release_to(mark);
  }
  for (int l = 0; l < L; ++l) {
    ProfileScope scope(profiling_active() ? "layers." + std::to_string(l) : std::string());
    for (LayerHooks* h : before_) h->before_forward(l, xs_[l], ctx);
    xs_[l + 1] = model_.block(l).forward(xs_[l], ctx);
    for (LayerHooks* h : after_) h->after_forward(l, xs_[l + 1], ctx);
    // The plan places gradients by these offsets: a mismatch is a bug, caught before it corrupts.
    LINGUA_CHECK(ar.mark() == plan_.layer_end[l], "internal error: layer ", l, " saved ", ar.mark(),
                 " bytes, the memory plan says ", plan_.layer_end[l]);
  }
  x_head_ = token_rows(xs_[L], seq, seq.prefix ? arena_tensor(ar, {NT, D}) : Tensor());
  model_.head().forward(x_head_, ctx);
  LINGUA_CHECK(ar.mark() == plan_.saved_end, "internal error: forward saved ", ar.mark(),
               " bytes, the memory plan says ", plan_.saved_end);
}

LossSum Executor::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale) {
  stage_batch(0, tokens, targets, B, T);
  forward_backward_staged(0, loss_scale);
  return take_loss();
}

Tensor Executor::StagedBatch::ids(int which) const {
  const int64_t n = (int64_t)B * T;
  if (dev.data()) return Tensor(dev.as<int32_t>() + which * n, {n}, DType::i32, Device::cuda);
  return Tensor(host.data() + which * n, {n});
}

void Executor::stage_batch(int slot, const int32_t* tokens, const int32_t* targets, int B, int T) {
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

Tensor Executor::staged_tokens(int slot) const {
  LINGUA_CHECK(slot < (int)staged_.size() && staged_[slot].B > 0, "internal error: batch slot ", slot, " not staged");
  return staged_[slot].ids(0);
}

LossSum Executor::take_loss() {
  LossSum ls;
  ls.tokens = loss_tokens_;
  if (device() == Device::cuda) copy_to_host(&ls.nll, loss_dev_.data(), sizeof(double));
  else ls.nll = loss_host_;
  return ls;
}

void Executor::forward_backward_staged(int slot, float loss_scale, bool last) {
  const Tensor tok = staged_tokens(slot), tgt = staged_[slot].ids(1);
  const SeqLayout seq = layout(staged_[slot].B, staged_[slot].T);
  ensure_arena(seq, true);
  const int64_t N = seq.rows(), NT = seq.token_rows(), D = model_.dims().dim;
  const int L = model_.n_layers();
  const DType act = model_.act_dtype();
  StepContext ctx = context(tok, seq, 0, true);
  ctx.last_micro_batch = last;
  ctx.first_micro_batch = slot == 0;
  {
    LINGUA_PROFILE_SCOPE("forward");
    forward_stages(ctx);
  }
  LINGUA_PROFILE_SCOPE("backward");
  Arena& ar = scratch_;
  // Gradients in the activations are zeroed just before their first write (see plan()).
  zero_grads_before_write(L + 1);
  if (model_.dims().weight_tying) zero_grads_before_write(0);
  double* loss_sum = &loss_host_;
  if (device() == Device::cuda) {
    if (!loss_dev_.data()) loss_dev_ = DeviceBuffer(sizeof(double));
    loss_sum = loss_dev_.as<double>();
  }
  Head& head = model_.head();
  const Tensor dnorm = head.loss_backward(tgt, loss_scale, loss_sum, slot > 0, ctx);
  // The residual stream's gradient (f32) and its copy in the activation dtype, the input of the
  // next matmuls (see Block::backward).
  Tensor dx = arena_tensor(ar, {N, D});
  Tensor dx_act = act == DType::f32 ? dx : arena_tensor(ar, {N, D}, act);
  if (seq.prefix == 0) {
    head.input_backward(xs_[L], dnorm, dx, act == DType::f32 ? Tensor() : dx_act, ctx);
  } else {  // the head saw the token rows only: the prefix rows' gradient starts at zero
    Tensor dh = arena_tensor(ar, {NT, D});
    Tensor dh_act = act == DType::f32 ? dh : arena_tensor(ar, {NT, D}, act);
    head.input_backward(x_head_, dnorm, dh, act == DType::f32 ? Tensor() : dh_act, ctx);
    place_token_rows(dx, seq, dh);
    if (act != DType::f32) place_token_rows(dx_act, seq, dh_act);
  }
  for (int l = L - 1; l >= 0; --l) {
    ProfileScope scope(profiling_active() ? "layers." + std::to_string(l) : std::string());
    for (LayerHooks* h : before_) h->before_backward(l, dx, dx_act, ctx);
    zero_grads_before_write(1 + l);
    model_.block(l).backward(xs_[l], dx, dx_act, ctx);
    for (LayerHooks* h : after_) h->after_backward(l, dx, dx_act, ctx);
  }
  if (!model_.dims().weight_tying) zero_grads_before_write(0);
  model_.embed_backward(tok, token_rows(dx, seq, seq.prefix ? arena_tensor(ar, {NT, D}) : Tensor()));
  for (LayerHooks* h : before_) h->after_model_backward(ctx);
}

LossSum Executor::forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T, float* nll_out) {
  const SeqLayout seq = layout(B, T);
  ensure_arena(seq, false);
  const int64_t NT = seq.token_rows();
  Tensor tok = device_ids(tokens, NT, 0), tgt = device_ids(targets, NT, 1);
  StepContext ctx = context(tok, seq, 0, false);
  forward_stages(ctx);
  Tensor nll = arena_tensor(scratch_, {NT});
  LossSum ls;
  ls.nll = model_.head().loss(tgt, nll);
  if (nll_out) copy_tensor(Tensor(nll_out, {NT}), nll);
  for (int64_t i = 0; i < NT; ++i) ls.tokens += targets[i] >= 0;
  return ls;
}

void Executor::forward_logits(const int32_t* tokens, int T, float* logits) {
  const int64_t V = model_.dims().vocab;
  const SeqLayout seq = layout(1, T);
  ensure_arena(seq, false, arena_bytes((int64_t)T * V));
  Tensor tok = device_ids(tokens, T, 0);
  StepContext ctx = context(tok, seq, 0, false);
  forward_stages(ctx);
  Tensor out = arena_tensor(saved_, {(int64_t)T, V});
  model_.head().logits(out);
  copy_tensor(Tensor(logits, {(int64_t)T, V}), out);
}

KVCache Executor::make_cache(int max_len, int batch) const {
  return KVCache(model_.dims(), max_len + prefix_, device(), model_.act_dtype(), batch);
}

void Executor::forward_decode(const int32_t* tokens, int T, KVCache& cache, float* logits) {
  forward_decode(tokens, cache.batch, T, cache, logits);
}

void Executor::forward_decode(const int32_t* tokens, int B, int T, KVCache& cache, float* logits) {
  const ModelDims& d = model_.dims();
  LINGUA_CHECK(B == cache.batch, "generation: ", B, " sequences for a KV cache of ", cache.batch);
  const bool first = cache.len == 0;
  const int P = first ? prefix_ : 0;
  const int pos0 = first ? 0 : cache.next_position();
  LINGUA_CHECK(pos0 + T <= d.max_seqlen, "generation: ", pos0 + T, " tokens exceed model.max_seqlen (", d.max_seqlen,
               ")");
  const SeqLayout seq{B, T, P};
  const int64_t rows = seq.rows(), S = seq.S(), D = d.dim, V = d.vocab;
  ensure_arena(seq, false, arena_bytes(B * V) + arena_bytes(B * D), true);
  Arena& ar = saved_;
  Tensor tok = device_ids(tokens, (int64_t)B * T, 0);
  StepContext ctx = context(tok, seq, pos0, false);
  Tensor x = arena_tensor(ar, {rows, D});
  if (P == 0) {
    model_.embed(tok, x);
  } else {  // each sequence's P prefix rows, then its tokens' embeddings
    const size_t mark = scratch_.mark();
    Tensor e = arena_tensor(scratch_, {(int64_t)B * T, D});
    model_.embed(tok, e);
    zero_row_blocks(x, S, 0, B, P);
    copy_row_blocks(x, S, P, e, T, 0, B, T);
    scratch_.release_to(mark);
  }
  for (int l = 0; l < model_.n_layers(); ++l) {
    for (LayerHooks* h : before_) h->before_forward(l, x, ctx);
    model_.block(l).forward_cached(x, cache, l, ctx);
    for (LayerHooks* h : after_) h->after_forward(l, x, ctx);
  }
  if (first) cache.prefix = P;
  cache.len += (int)S;
  // Only each sequence's last position's logits are needed.
  Tensor last = arena_tensor(ar, {(int64_t)B, D});
  copy_row_blocks(last, 1, 0, x, S, S - 1, B, 1);
  Tensor out = arena_tensor(ar, {(int64_t)B, V});
  model_.head().logits_of(last, out, ctx);
  copy_tensor(Tensor(logits, {(int64_t)B, V}), out);
}

}  // namespace lingua
