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
  int64_t embedding = 0;          // looked up, not multiplied: token embedding and STEM tables
  int64_t stem_tables = 0;        // of which STEM tables
  int64_t active_non_embedding = 0;  // multiplied per token, output head included (MFU counts these)
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
  // ignored). Accumulates the gradient of loss_scale * sum(nll) into params().grads (overwrites
  // it when the gradients live in activation memory, see set_grads_in_activations).
  LossSum forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale);
  // forward_backward in three parts, so that the device work of a step can be captured once as a
  // CUDA graph and replayed (see TrainStep):
  //  - stage_batch copies micro-batch `slot`'s ids to the device without waiting (host work; the
  //    targets are validated and counted here);
  //  - forward_backward_staged runs it, pure device work that never waits for the GPU; the loss
  //    stays on the device, summed over the slots from slot 0 on;
  //  - take_loss waits for the GPU and returns the sum since slot 0, with the staged token counts.
  void stage_batch(int slot, const int32_t* tokens, const int32_t* targets, int B, int T);
  void forward_backward_staged(int slot, float loss_scale);
  LossSum take_loss();
  // Changes whenever the step memory is reallocated (a captured step then holds stale pointers).
  uint64_t memory_epoch() const { return memory_epoch_; }
  // Forward only. nll_out: [B, T] per-token nll (optional).
  LossSum forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T, float* nll_out = nullptr);
  // Decoding one sequence with a KV cache (make it with make_cache): feeds T new tokens, returns
  // the logits [V] of the last (host memory).
  void forward_decode(const int32_t* tokens, int T, KVCache& cache, float* logits);
  KVCache make_cache(int max_len) const { return KVCache(dims_, max_len, device(), act_); }
  // Full-sequence logits for one sequence ([T, V]), for tests and scoring.
  void forward_logits(const int32_t* tokens, int T, float* logits);

  ParamCounts param_counts() const;
  // STEM: [vocab] i32, nonzero for the input ids of the training micro-batches since the last
  // step's first (cleared by micro-batch slot 0): the table rows a step touched, for the row-sparse
  // optimizer. Empty without STEM layers.
  Tensor stem_rows_seen() const { return rows_seen_; }
  // Training FLOPs per token, SPEC formula: 6 * active non-embedding params + 6 * L * dim * seq_len.
  double flops_per_token(int seq_len) const;
  // FLOPs the hardware runs per token (HFU): the model FLOPs plus recomputed matmuls. The
  // recomputation we do (norm outputs, the SwiGLU product) repeats only elementwise work, so
  // today this equals flops_per_token; a recomputed matmul must add its share here.
  double hardware_flops_per_token(int seq_len) const { return flops_per_token(seq_len); }
  // Arena bytes one training micro-batch of [B, T] needs (activations in act_dtype()), gradients
  // not counted.
  size_t activation_bytes(int B, int T) const;
  size_t activation_bytes_high_water() const { return saved_.high_water() + scratch_.high_water(); }

  // Gradient memory. Off (the default): params() owns the gradients, forward_backward adds to
  // them, zero_grads() clears them (several micro-batches accumulate). On: the gradients live in
  // the step memory, over activations that are dead by the time each gradient is written (a
  // layer's gradients over the activations of the layers above it), which saves most of their
  // size at peak, as freeing activations in backward does. Then forward_backward overwrites the
  // gradients, and they stay valid until the next forward (one micro-batch per step).
  void set_grads_in_activations(bool on);
  bool grads_in_activations() const { return grads_in_activations_; }
  // Clears the gradients before a step's micro-batches (nothing to do when they live in the
  // activations: forward_backward overwrites them there).
  void zero_grads();
  // Bytes of the step memory allocated now (activations, scratch, and the gradients when they
  // live there).
  size_t step_memory_bytes() const { return memory_.capacity(); }
  // The CPU path's peak estimate: the step memory, the weights, two AdamW moments and the
  // gradients unless they live in the step memory.
  size_t host_training_bytes() const {
    return step_memory_bytes() + (grads_in_activations_ ? 3 : 4) * sizeof(float) * (size_t)store_.total();
  }

 private:
  struct Layer;
  // Where a step's memory goes, for micro-batches of [B, T]. Two regions of one allocation:
  // scratch (transient memory of one layer's forward or backward, and the gradients backward
  // passes between layers) then saved (what forward keeps, in layer order). The gradients, when
  // they live in the step memory, start grads_offset bytes into the saved region.
  struct MemoryPlan {
    size_t scratch = 0, saved = 0;  // bytes each region needs
    std::vector<size_t> layer_end;  // saved-region bytes in use after layer l's forward
    size_t saved_end = 0;           // ... after the final norm
    size_t grads_offset = 0;        // training with grads_in_activations: lowest valid offset
  };
  MemoryPlan plan(int B, int T, bool training, size_t extra_bytes) const;
  // Sizes the step memory for a call (growing it when needed) and resets both regions.
  void ensure_arena(int B, int T, bool training, size_t extra_bytes = 0);
  void place_grads();
  // Fails naming the position when an id is outside the vocabulary (targets may be < 0: ignored).
  void check_ids(const int32_t* ids, int64_t n, bool targets) const;
  // Token ids (host) as a tensor on the model's device; slot 0: inputs, 1: targets. Synchronous.
  Tensor device_ids(const int32_t* ids, int64_t n, int slot);
  // A staged micro-batch: its ids on the device (CUDA) or host copies (CPU).
  struct StagedBatch {
    int B = 0, T = 0;
    DeviceBuffer dev;    // CUDA: [2, B*T] i32 (inputs, then targets)
    std::vector<int32_t> host;
    Tensor ids(int which) const;  // 0: inputs, 1: targets, [B*T] i32
  };
  void forward_layers(const Tensor& tokens, int B, int T, StepContext& ctx);
  StepContext context(const Tensor& tokens, int B, int T, int pos0, bool save);
  // With grads_in_activations, zeroes the gradients of the flat range [begin, end) before their
  // first write of the step.
  void zero_grads_before_write(int64_t begin, int64_t end);

  ModelDims dims_;
  DType act_ = DType::f32;
  bool recompute_norms_ = false;
  Tensor norm_buf_;  // with recompute_norms: the one [N, dim] buffer every layer's n1 and n2 use
  DeviceBuffer ids_dev_[2];
  std::vector<StagedBatch> staged_;
  DeviceBuffer loss_dev_;  // CUDA: the staged micro-batches' summed nll (one double)
  DeviceBuffer rows_seen_dev_;
  std::vector<int32_t> rows_seen_host_;
  Tensor rows_seen_;         // see stem_rows_seen()
  double loss_host_ = 0;   // CPU: the same
  int64_t loss_tokens_ = 0;  // targets >= 0 staged since slot 0
  uint64_t memory_epoch_ = 0;
  ParamStore store_;
  RopeTable rope_;
  std::vector<std::unique_ptr<Layer>> layers_;
  int tok_emb_, norm_, output_;
  std::vector<int64_t> layer_param_begin_;  // flat offset of layer l's first parameter; [L]: norm's
  bool grads_in_activations_ = false;
  Arena memory_;            // the step memory (owning); saved_ and scratch_ are views of it
  Arena scratch_, saved_;
  MemoryPlan plan_;         // of the last ensure_arena
  size_t grads_offset_ = 0; // where the gradients are (saved-region bytes), when in the step memory
  std::vector<Tensor> xs_;  // residual stream entering each layer, and after the last: L+1 x [N, dim]
  Tensor xf_, rstdf_;       // final norm output and its rstd
};

}  // namespace lingua
