#include "lingua/model/transformer.h"

#include <algorithm>
#include <cmath>

#include "lingua/ops/embedding/embedding.h"

namespace lingua {

Transformer::Transformer(const ModelConfig& cfg, const ModelDims& dims)
    : dims_(dims), recompute_norms_(cfg.recompute_norms) {
  const float emb_std = (float)cfg.init_base_std.value_or(std::pow(dims.dim, -0.5));
  ParamSpec emb;
  emb.name = "tok_embeddings.weight";
  emb.shape = {dims.vocab, dims.dim};
  emb.axes = {"vocab", "dim"};
  emb.init = ParamInit::trunc_normal(emb_std);
  emb.embedding = true;
  // Gathered from the fp32 weights; the matmul of a tied head reads the bf16 copy.
  emb.compute_copy = dims.weight_tying;
  tok_emb_ = store_.add(std::move(emb));
  // Each stage's parameters, as declared (ids are given in order while building).
  auto mark_stage = [&](int stage) { stage_by_id_.resize(store_.ids().size(), stage); };
  mark_stage(0);
  rope_ = rope_table(dims.max_seqlen, dims.head_dim, dims.rope_theta);
  if (!cfg.modules.empty()) modules_ = std::make_unique<ModuleTokens>(cfg, dims);
  for (int i = 0; i < dims.n_layers; ++i) {
    blocks_.push_back(std::make_unique<TransformerBlock>(store_, dims, cfg, i, rope_));
    if (modules_) modules_->declare_layer(store_, i);  // part of the block's stage
    mark_stage(1 + i);
  }
  head_ = std::make_unique<LMHead>(store_, dims, emb_std, dims.weight_tying ? tok_emb_ : -1);
  mark_stage(dims.n_layers + 1);
  if (modules_) modules_->freeze(store_);
  store_.finalize();
  store_.init((uint64_t)cfg.seed);
}

Transformer::~Transformer() = default;

void Transformer::to_device(Device device) {
  if (device == this->device()) return;
  store_.to_device(device);
  act_ = device == Device::cuda ? DType::bf16 : DType::f32;
}

void Transformer::embed(const Tensor& tokens, const Tensor& x) const { embedding_forward(tokens, store_.param(tok_emb_), x); }

void Transformer::embed_backward(const Tensor& tokens, const Tensor& dx) const {
  const Tensor g = store_.grad(tok_emb_);
  if (g.data) embedding_backward(tokens, dx, g);
}

int Transformer::stage_of(int id) const {
  store_.info(id);  // checks the id
  if (id < (int)stage_by_id_.size()) return stage_by_id_[id];
  // Added later (ParamStore::add after one of a stage's own): the stage of the parameter before it.
  const std::vector<int>& order = store_.ids();
  for (auto it = std::find(order.begin(), order.end(), id); it != order.begin();)
    if (*--it < (int)stage_by_id_.size()) return stage_by_id_[*it];
  return 0;
}

ParamCounts Transformer::param_counts() const {
  ParamCounts c;
  for (int id : store_.ids()) {
    const ParamInfo& p = store_.info(id);
    const int64_t n = p.full_numel();
    c.total += n;
    if (p.embedding || is_module_param(p.name)) c.embedding += n;  // (module rows are added, not multiplied)
    if (!p.trainable) c.frozen += n;
    if (p.group != "default") c.groups[p.group] += n;
  }
  c.active_non_embedding = c.total - c.embedding;
  if (dims_.weight_tying) c.active_non_embedding += (int64_t)dims_.vocab * dims_.dim;  // the head still multiplies
  return c;
}

double Transformer::flops_per_token(int seq_len) const {
  int64_t idle = 0;
  for (const auto& b : blocks_)
    if (const FeedForward* f = b->ffn()) idle += f->idle_params();
  // Frozen multiplied weights: forward and input gradient, no weight gradient (4 FLOPs, not 6).
  int64_t frozen = 0;
  for (int id : store_.ids()) {
    const ParamInfo& p = store_.info(id);
    if (!store_.trainable(id) && !p.embedding && !is_module_param(p.name)) frozen += p.full_numel();
  }
  if (dims_.weight_tying && !store_.trainable(tok_emb_)) frozen += (int64_t)dims_.vocab * dims_.dim;  // the head
  // Module rows are rows the step computes too: the work of T + P rows, counted per token.
  const double T = seq_len, P = modules_ ? modules_->prefix_rows() : 0;
  return (T + P) / T *
         (6.0 * (double)(param_counts().active_non_embedding - idle - frozen) + 4.0 * (double)frozen +
          6.0 * dims_.n_layers * dims_.dim * (T + P));
}

void Transformer::begin_step(int64_t step) {
  for (auto& b : blocks_)
    if (FeedForward* f = b->ffn()) f->begin_step(step);
  store_.step_scalars().upload();
}

bool Transformer::work_varies_per_step() const {
  for (const auto& b : blocks_)
    if (const FeedForward* f = b->ffn(); f && f->work_varies_per_step()) return true;
  return false;
}

int64_t Transformer::replayed_steps() const {
  int64_t n = 0;
  for (const auto& b : blocks_)
    if (const FeedForward* f = b->ffn()) n = std::max(n, f->replayed_steps());
  return n;
}

std::map<std::string, double> Transformer::step_metrics() const {
  std::map<std::string, double> m;
  for (const auto& b : blocks_)
    if (const FeedForward* f = b->ffn()) f->add_step_metrics(m);
  return m;
}

std::string Transformer::describe_ffn() const {
  std::map<std::string, std::string> layers;  // kind -> "0,2,4"
  for (int l = 0; l < n_layers(); ++l) {
    std::string& s = layers[blocks_[l]->ffn_kind()];
    s += (s.empty() ? "" : ",") + std::to_string(l);
  }
  std::string out;
  for (auto& [kind, ls] : layers) out += (out.empty() ? "" : "; ") + kind + " on layers " + ls;
  return out;
}

}  // namespace lingua
