#pragma once
// Lingua's LMTransformer (Llama-style), single device, explicit forward and backward:
//   x = tok_embeddings[tokens]
//   per layer: h = x + attention(attention_norm(x)); x = h + feed_forward(ffn_norm(h))
//   logits = output(norm(x))  (output shares tok_embeddings when weight_tying)
// Parameter names follow Lingua's state dict (layers.{i}.attention.wq.weight, ...).
#include <memory>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/model/attention.h"
#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/param_store.h"
#include "lingua/ops/rope/rope.h"

namespace lingua {

struct LossSum {
  double nll = 0;      // sum of token negative log-likelihoods (nats)
  int64_t tokens = 0;  // targets counted (target >= 0)
};

struct ParamCounts {
  int64_t total = 0;              // every parameter
  int64_t embedding = 0;          // token embedding (and later STEM tables)
  int64_t active_non_embedding = 0;  // multiplied per token, output head included
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

  // One micro-batch of training: forward and backward. tokens, targets: [B, T] (target < 0 is
  // ignored). Accumulates the gradient of loss_scale * sum(nll) into params().grads.
  LossSum forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale);
  // Forward only. nll_out: [B, T] per-token nll (optional).
  LossSum forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T, float* nll_out = nullptr);
  // Decoding one sequence with a KV cache (make it with make_cache): feeds T new tokens, returns
  // the logits [V] of the last (host memory).
  void forward_decode(const int32_t* tokens, int T, KVCache& cache, float* logits);
  KVCache make_cache(int max_len) const { return KVCache(dims_, max_len, device(), act_); }
  // Full-sequence logits for one sequence ([T, V]), for tests and scoring.
  void forward_logits(const int32_t* tokens, int T, float* logits);

  ParamCounts param_counts() const;
  // Training FLOPs per token, SPEC formula: 6 * active non-embedding params + 6 * L * dim * seq_len.
  double flops_per_token(int seq_len) const;
  // FLOPs the hardware runs per token (HFU): the model FLOPs plus recomputed matmuls. The
  // recomputation we do (norm outputs, the SwiGLU product) repeats only elementwise work, so
  // today this equals flops_per_token; a recomputed matmul must add its share here.
  double hardware_flops_per_token(int seq_len) const { return flops_per_token(seq_len); }
  // Arena bytes one training micro-batch of [B, T] needs (activations in act_dtype()).
  size_t activation_bytes(int B, int T) const;
  size_t activation_bytes_high_water() const { return arena_.high_water(); }

 private:
  struct Layer;
  void ensure_arena(int B, int T, size_t extra_bytes = 0);
  // Token ids (host) as a tensor on the model's device; slot 0: inputs, 1: targets.
  Tensor device_ids(const int32_t* ids, int64_t n, int slot);
  void forward_layers(const Tensor& tokens, int B, int T, StepContext& ctx);
  StepContext context(const int32_t* tokens, int B, int T, int pos0, bool save);

  ModelDims dims_;
  DType act_ = DType::f32;
  bool recompute_norms_ = false;
  Tensor norm_buf_;  // with recompute_norms: the one [N, dim] buffer every layer's n1 and n2 use
  DeviceBuffer ids_dev_[2];
  ParamStore store_;
  RopeTable rope_;
  std::vector<std::unique_ptr<Layer>> layers_;
  int tok_emb_, norm_, output_;
  Arena arena_;
  std::vector<Tensor> xs_;  // residual stream entering each layer, and after the last: L+1 x [N, dim]
  Tensor xf_, rstdf_;       // final norm output and its rstd
};

}  // namespace lingua
