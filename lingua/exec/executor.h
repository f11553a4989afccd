#pragma once
// Executor: runs a Transformer's stages for training, evaluation and decoding. It owns what the
// model code does not: the step memory (one allocation, planned per shape, in two regions), where
// the gradients live (their own buffer, or over activations that are dead when each is written),
// the micro-batches staged on the device, the loss kept on the device, the epochs a captured CUDA
// graph is checked against, the layout of a micro-batch's rows (SeqLayout: prefix rows), and the
// per-layer hooks through which other layers of the program act on a step from outside the model
// (data-parallel collectives, growth ramps, module tokens, profiling). One executor runs a model at
// a time.
#include <cstdint>
#include <memory>
#include <vector>

#include "lingua/core/arena.h"
#include "lingua/exec/hooks.h"
#include "lingua/model/transformer.h"

namespace lingua {

class Executor {
 public:
  explicit Executor(Transformer& model);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  Transformer& model() { return model_; }
  const Transformer& model() const { return model_; }
  Device device() const { return model_.device(); }

  // ---- Hooks and row layout ----
  // Hooks run around every block in the order hooks.h gives (not owned; remove before destroying them).
  void add_hooks(LayerHooks* hooks);
  void remove_hooks(LayerHooks* hooks);
  // Tells every hook that block `layer`'s split weights were just gathered (a sharding hook calls it).
  void weights_gathered(int layer, const StepContext& ctx);
  // Prefix rows per sequence for the calls that follow (SeqLayout::prefix; 0: none). Their values
  // are zero when block 0 starts, unless a hook's before_forward writes them. A model with enabled
  // module tokens (Transformer::module_tokens) starts with their rows and their hook, added first.
  void set_prefix_rows(int prefix);
  int prefix_rows() const { return prefix_; }
  // The lookups of column-sliced tables (StepContext::sliced_tables; not owned; null: none).
  void set_sliced_tables(SlicedTableLookup* lookup) { sliced_tables_ = lookup; }

  // ---- Training ----
  // One micro-batch: forward and backward. tokens, targets: [B, T] host (target < 0: ignored).
  // Accumulates the gradient of loss_scale * sum(nll) into the store's gradients (overwrites them
  // when they live in the activation memory, see set_grads_in_activations).
  LossSum forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale);
  // forward_backward in three parts, so that the device work of a step can be captured once as a
  // CUDA graph and replayed (see TrainStep):
  //  - stage_batch copies micro-batch `slot`'s ids to the device without waiting (host work; the
  //    ids are validated and the targets counted here);
  //  - forward_backward_staged runs it, pure device work that never waits for the GPU; the loss
  //    stays on the device, summed over the slots from slot 0 on;
  //  - take_loss waits for the GPU and returns the sum since slot 0, with the staged token counts.
  void stage_batch(int slot, const int32_t* tokens, const int32_t* targets, int B, int T);
  Tensor staged_tokens(int slot) const;  // [B * T] i32 on the model's device
  // `last`: the step's last micro-batch (StepContext::last_micro_batch, for data-parallel hooks).
  void forward_backward_staged(int slot, float loss_scale, bool last = true);
  LossSum take_loss();
  // Changes whenever a captured step would be stale: a buffer it points to is reallocated (the step
  // memory, the staging buffers, the parameter layout), or the hooks or the row layout change.
  uint64_t memory_epoch() const;

  // Gradient memory. Off (the default): the store owns the gradients, forward_backward adds to
  // them, zero_grads() clears them (several micro-batches accumulate). On: the gradients live in
  // the step memory, over activations that are dead by the time each gradient is written (a
  // layer's gradients over the activations of the layers above it), which saves most of their
  // size at peak, as freeing activations in backward does. Then forward_backward overwrites the
  // gradients, and they stay valid until the next forward (one micro-batch per step).
  void set_grads_in_activations(bool on);
  bool grads_in_activations() const { return grads_in_activations_; }
  void zero_grads();
  // The gradients of one stage (0: the embedding, 1 + l: block l, L + 1: the head), one
  // contiguous range of the gradient buffer ([n] f32 on the device; empty when the stage has no
  // trainable parameter). Valid during a training call's backward and until the next forward
  // (hooks.h says when each is final).
  int n_stages() const { return model_.n_layers() + 2; }
  Tensor stage_grads(int stage) const;

  // ---- Inference ----
  // Forward only. nll_out: [B, T] per-token nll (optional).
  LossSum forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T, float* nll_out = nullptr);
  // Full-sequence logits of one sequence ([T, V] host), for tests and scoring.
  void forward_logits(const int32_t* tokens, int T, float* logits);
  // Decoding with a KV cache of `batch` sequences in step (max_len tokens each): feeds T new tokens
  // of each (tokens [B, T]; after its prefix rows on the first call, when there are any), returns
  // the logits [B, V] of each one's last (host memory). B must be the cache's batch.
  KVCache make_cache(int max_len, int batch = 1) const;
  void forward_decode(const int32_t* tokens, int B, int T, KVCache& cache, float* logits);
  void forward_decode(const int32_t* tokens, int T, KVCache& cache, float* logits);  // B = cache.batch

  // ---- Memory ----
  // Arena bytes one training micro-batch of [B, T] needs (activations in the activation dtype),
  // gradients not counted.
  size_t activation_bytes(int B, int T) const;
  size_t activation_bytes_high_water() const { return saved_.high_water() + scratch_.high_water(); }
  size_t step_memory_bytes() const { return memory_.capacity(); }  // allocated now
  // The CPU path's peak estimate: the step memory, the weights, two AdamW moments and the
  // gradients unless they live in the step memory.
  size_t host_training_bytes() const;

 private:
  // Where a step's memory goes, for a micro-batch laid out as `seq`. Two regions of one
  // allocation: scratch (transient memory of one block's forward or backward, and the gradients
  // backward passes between blocks) then saved (what forward keeps, in block order). The
  // gradients, when they live in the step memory, start grads_offset bytes into the saved region.
  struct MemoryPlan {
    size_t scratch = 0, saved = 0;  // bytes each region needs
    std::vector<size_t> layer_end;  // saved-region bytes in use after block l's forward
    size_t saved_end = 0;           // ... after the final norm
    size_t grads_offset = 0;        // training with grads_in_activations: lowest valid offset
  };
  // The gradient floats each stage writes (0: embedding, 1 + l: block l, L + 1: head).
  struct GradRange {
    int64_t begin = 0, end = 0;
  };
  // decoding: forward_decode's, whose blocks keep nothing (only the residual stream, then the
  // extra bytes), so its memory does not grow with the layer count.
  MemoryPlan plan(const SeqLayout& seq, bool training, size_t extra_bytes, bool decoding = false) const;
  void update_grad_ranges() const;
  // Sizes the step memory for a call (growing it when needed) and resets both regions.
  void ensure_arena(const SeqLayout& seq, bool training, size_t extra_bytes = 0, bool decoding = false);
  void place_grads();
  void zero_grads_before_write(int stage);
  void check_ids(const int32_t* ids, int64_t n, bool targets) const;
  Tensor device_ids(const int32_t* ids, int64_t n, int which);  // synchronous; 0: inputs, 1: targets
  SeqLayout layout(int B, int T) const;
  StepContext context(const Tensor& tokens, const SeqLayout& seq, int pos0, bool save);
  // Forward through the embedding, the blocks and the head's norm, keeping the block inputs (xs_)
  // and the head's input rows (x_head_); sets ctx.shared_norm when norms are recomputed (backward
  // reads it).
  void forward_stages(StepContext& ctx);
  // Token rows of a [rows, dim] tensor of the layout, as a compact [B * T, dim] one (copied into
  // `compact` when there are prefix rows; the tensor itself otherwise).
  Tensor token_rows(const Tensor& x, const SeqLayout& seq, const Tensor& compact) const;
  // The reverse: compact [B * T, dim] rows into the token rows of x [rows, dim], its prefix rows zeroed.
  void place_token_rows(const Tensor& x, const SeqLayout& seq, const Tensor& compact) const;
  // A staged micro-batch: its ids on the device (CUDA) or host copies (CPU).
  struct StagedBatch {
    int B = 0, T = 0;
    DeviceBuffer dev;  // CUDA: [2, B*T] i32 (inputs, then targets)
    std::vector<int32_t> host;
    Tensor ids(int which) const;  // 0: inputs, 1: targets, [B*T] i32
  };

  void order_hooks();

  Transformer& model_;
  std::vector<LayerHooks*> hooks_;          // as added
  std::vector<LayerHooks*> before_, after_;  // the order of the before_* and after_* events
  std::unique_ptr<LayerHooks> module_hooks_;
  int prefix_ = 0;
  SlicedTableLookup* sliced_tables_ = nullptr;
  DeviceBuffer ids_dev_[2];
  std::vector<StagedBatch> staged_;
  DeviceBuffer loss_dev_;    // CUDA: the staged micro-batches' summed nll (one double)
  double loss_host_ = 0;     // CPU: the same
  int64_t loss_tokens_ = 0;  // targets >= 0 staged since slot 0
  uint64_t memory_epoch_ = 0;
  mutable uint64_t layout_epoch_ = ~0ull;  // the store's layout the gradient ranges were computed for
  uint64_t arena_layout_epoch_ = ~0ull;    // ... the step memory was sized for
  mutable std::vector<GradRange> grad_ranges_;
  bool grads_in_activations_ = false;
  Arena memory_;             // the step memory (owning); saved_ and scratch_ are views of it
  Arena scratch_, saved_;
  MemoryPlan plan_;          // of the last ensure_arena
  size_t grads_offset_ = 0;  // where the gradients are (saved-region bytes), when in the step memory
  std::vector<Tensor> xs_;   // residual stream entering each block, and after the last: L+1 x [rows, dim]
  Tensor x_head_;            // the head's input: token rows of xs_[L] ([B*T, dim] f32)
};

}  // namespace lingua
