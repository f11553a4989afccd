#pragma once
// One optimizer step of training: the gradients cleared, forward and backward over the step's
// micro-batches, then AdamW. On CUDA with `cuda_graph`, the device work of a step is captured
// once as a CUDA graph (after one eager step of the same shapes has sized every buffer) and
// replayed each step, so the host launches one graph instead of ~1000 kernels. The host work stays
// outside the graph: the micro-batches' ids and the optimizer's per-step constants are copied to
// the device before each launch. The graph is captured again when the shapes or any buffer it
// points to change; a capture that fails (an op that waits for the GPU, say) falls back to eager
// steps with one warning on stderr.
#include <cstdint>
#include <memory>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/exec/executor.h"
#include "lingua/optim/optimizer.h"

namespace lingua {

// AdamW over the model's parameters, in the groups its modules declared, from optim.*.
std::unique_ptr<AdamW> make_optimizer(Transformer& model, const OptimConfig& cfg);

struct MicroBatch {
  const int32_t* tokens;   // [B, T] host
  const int32_t* targets;  // [B, T] host (< 0: ignored)
  int B, T;
};

class TrainStep {
 public:
  TrainStep(Executor& exec, AdamW& opt, bool cuda_graph);
  // Runs one step; returns the loss summed over the micro-batches (waits for the GPU).
  // eager: run this step without the graph (e.g. while profiling per op).
  LossSum run(const std::vector<MicroBatch>& micro, float loss_scale, double lr_mult, StepReport* report = nullptr,
              bool eager = false);
  bool graph_in_use() const { return graph_.ready(); }
  int captures() const { return captures_; }

 private:
  void body(int n_micro, float loss_scale);  // the device work of a step
  struct Key {
    std::vector<int> shapes;  // B, T per micro-batch
    float loss_scale = 0;
    uint64_t model_epoch = 0, scratch_epoch = 0;
    bool operator==(const Key&) const = default;
  };
  Executor& exec_;
  AdamW& opt_;
  bool use_graph_;
  CudaGraph graph_;
  Key key_;             // what graph_ was captured for
  Key eager_key_;       // the shapes of the last eager step (a capture follows one)
  int captures_ = 0;
};

}  // namespace lingua
