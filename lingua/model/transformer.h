#pragma once
// Lingua's LMTransformer (Llama-style) as a tree of modules, single device:
//   x = tok_embeddings[tokens]
//   per block: h = x + attention(attention_norm(x)); x = h + feed_forward(ffn_norm(h))
//   logits = output(norm(x))  (output shares tok_embeddings when weight_tying)
// Parameter names follow Lingua's state dict (layers.{i}.attention.wq.weight, ...). The model only
// declares its parameters and runs its stages; the executor (lingua/exec) owns the step memory,
// the gradients' placement, the batch staging and the order of the stages, and calls hooks between
// them.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/model/block.h"
#include "lingua/model/dims.h"
#include "lingua/model/head.h"
#include "lingua/model/linear.h"
#include "lingua/model/module_tokens.h"
#include "lingua/model/param_store.h"
#include "lingua/ops/rope/rope.h"

namespace lingua {

struct LossSum {
  double nll = 0;      // sum of token negative log-likelihoods (nats)
  int64_t tokens = 0;  // targets counted (target >= 0)
};

struct ParamCounts {
  int64_t total = 0;                  // every parameter (full shapes)
  int64_t embedding = 0;              // looked up or added, not multiplied (token embedding, token-indexed tables, module tokens)
  int64_t active_non_embedding = 0;   // multiplied per token, output head included (MFU counts these)
  int64_t frozen = 0;                 // not trained
  std::map<std::string, int64_t> groups;  // per optimizer group other than "default"
};

class Transformer {
 public:
  Transformer(const ModelConfig& cfg, const ModelDims& dims);
  ~Transformer();

  ParamStore& params() { return store_; }
  const ParamStore& params() const { return store_; }
  const ModelDims& dims() const { return dims_; }
  void init_weights(uint64_t seed) { store_.init(seed); }

  // Moves the model to CUDA (weights uploaded, activations bf16, residual stream fp32).
  void to_device(Device device);
  Device device() const { return store_.device(); }
  DType act_dtype() const { return act_; }
  bool recompute_norms() const { return recompute_norms_; }

  // The stages, in the order a forward runs them.
  // x[n] = tok_embeddings[tokens[n]] (x: [N, dim] f32); backward accumulates dx rows into the table.
  void embed(const Tensor& tokens, const Tensor& x) const;
  void embed_backward(const Tensor& tokens, const Tensor& dx) const;
  int n_layers() const { return (int)blocks_.size(); }
  Block& block(int l) { return *blocks_[l]; }
  const Block& block(int l) const { return *blocks_[l]; }
  Head& head() { return *head_; }
  const Head& head() const { return *head_; }
  // The stage a parameter belongs to: 0 the embedding, 1 + l block l, n_layers() + 1 the head; the
  // stage that declared it, or, for one added later, the stage of the parameter before it in the
  // layout (ParamStore::add's `after`).
  int stage_of(int param_id) const;
  // The model's module tokens (model.modules; null when it holds none): the executor runs them.
  const ModuleTokens* module_tokens() const { return modules_.get(); }

  ParamCounts param_counts() const;
  // Training FLOPs per token, SPEC formula: 6 * active non-embedding params + 6 * L * dim * seq_len,
  // leaving out the parameters idle in the step set up last (FeedForward::idle_params), counting
  // frozen multiplied weights at 4 (no weight gradient), and, with module rows (P per sequence),
  // the work of seq_len + P rows per seq_len tokens.
  double flops_per_token(int seq_len) const;
  // FLOPs the hardware runs per token (HFU): the model FLOPs plus recomputed matmuls. The
  // recomputation we do (norm outputs, the SwiGLU product) repeats only elementwise work, so
  // today this equals flops_per_token; a recomputed matmul must add its share here.
  double hardware_flops_per_token(int seq_len) const { return flops_per_token(seq_len); }
  // Which FFN variant runs where, e.g. "swiglu on layers 0,1,2".
  std::string describe_ffn() const;

  // Training progress (FeedForward::begin_step): sets every layer up for optimizer step `step`
  // and uploads the per-step scalars. The trainer calls it before each step (and the checkpoint
  // loaders before loading one of that step); parameters may come or go.
  void begin_step(int64_t step);
  // Whether training steps' device work differs from step to step (FeedForward::work_varies_per_step).
  bool work_varies_per_step() const;
  // Steps added after the configured ones, replaying the data of the first ones (max over layers).
  int64_t replayed_steps() const;
  // Per-step values the layers log (FeedForward::add_step_metrics).
  std::map<std::string, double> step_metrics() const;

 private:
  ModelDims dims_;
  DType act_ = DType::f32;
  bool recompute_norms_ = false;
  ParamStore store_;
  RopeTable rope_;
  int tok_emb_ = -1;
  std::vector<int> stage_by_id_;  // of the parameters declared while building
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<Head> head_;
  std::unique_ptr<ModuleTokens> modules_;
};

}  // namespace lingua
