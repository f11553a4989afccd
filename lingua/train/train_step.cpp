#include "lingua/train/train_step.h"

#include <cstdio>

#include "lingua/core/error.h"
#include "lingua/core/profiler.h"

namespace lingua {

std::unique_ptr<AdamW> make_optimizer(Transformer& model, const OptimConfig& cfg) {
  return std::make_unique<AdamW>(model.params(), cfg);
}

TrainStep::TrainStep(Executor& exec, AdamW& opt, bool cuda_graph)
    : exec_(exec), opt_(opt), use_graph_(cuda_graph && exec.device() == Device::cuda) {}

void TrainStep::body(int n_micro, float loss_scale) {
  exec_.zero_grads();
  for (int i = 0; i < n_micro; ++i) {
    opt_.observe_input_ids(exec_.staged_tokens(i), i == 0);  // the rows a row-sparse group updates
    exec_.forward_backward_staged(i, loss_scale, i == n_micro - 1);
  }
  opt_.apply();
}

LossSum TrainStep::run(const std::vector<MicroBatch>& micro, float loss_scale, double lr_mult, StepReport* report,
                       bool eager) {
  LINGUA_CHECK(!micro.empty(), "internal error: a training step without micro-batches");
  Key key;
  key.loss_scale = loss_scale;
  for (size_t i = 0; i < micro.size(); ++i) {
    exec_.stage_batch((int)i, micro[i].tokens, micro[i].targets, micro[i].B, micro[i].T);
    key.shapes.push_back(micro[i].B);
    key.shapes.push_back(micro[i].T);
  }
  StepReport rep = opt_.prepare(lr_mult);
  if (report) *report = rep;
  exec_.model().params().values_written();  // (a replayed graph updates them without AdamW::apply)
  const int n = (int)micro.size();
  // (A model whose work differs between steps, e.g. guides run at random, cannot replay one graph.)
  if (!use_graph_ || eager || profiling_active() || exec_.model().work_varies_per_step()) {
    body(n, loss_scale);
    return exec_.take_loss();
  }
  // Epochs after staging: staging may have grown the id buffers.
  key.model_epoch = exec_.memory_epoch();
  key.scratch_epoch = cuda_scratch_epoch();
  if (graph_.ready() && key == key_) {
    graph_.launch();
    return exec_.take_loss();
  }
  if (!(key == eager_key_)) {
    // First step of these shapes: run it eagerly, which sizes every buffer the graph will use.
    body(n, loss_scale);
    eager_key_ = key;
    eager_key_.model_epoch = exec_.memory_epoch();
    eager_key_.scratch_epoch = cuda_scratch_epoch();
    return exec_.take_loss();
  }
  try {
    graph_.begin_capture();
    body(n, loss_scale);
    graph_.end_capture();
  } catch (const Error& e) {
    graph_.reset();
    use_graph_ = false;
    std::fprintf(stderr, "lingua: warning: capturing the training step as a CUDA graph failed, running without "
                         "graphs (cuda_graph=false silences this): %s\n", e.what());
    body(n, loss_scale);
    return exec_.take_loss();
  }
  ++captures_;
  key_ = key;
  graph_.launch();
  return exec_.take_loss();
}

}  // namespace lingua
