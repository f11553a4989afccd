#include "lingua/dist/ddp.h"

namespace lingua {

DataParallel::DataParallel(Executor& exec, Communicator& comm) : exec_(exec), comm_(comm) {
  LINGUA_CHECK(comm.device() == exec.device() || comm.size() == 1, "data parallelism: the communicator (",
               comm.backend(), ") is for ", device_name(comm.device()), " tensors, the model is on ",
               device_name(exec.device()));
  exec_.add_hooks(this);
}

DataParallel::~DataParallel() { exec_.remove_hooks(this); }

void DataParallel::reduce_stage(int stage) {
  if (reduced_[stage]) return;
  reduced_[stage] = true;
  const Tensor g = exec_.stage_grads(stage);
  if (g.data == nullptr || comm_.size() == 1) return;
  comm_.all_reduce_tensor(g);
  ++collectives_;
}

void DataParallel::before_backward(int layer, const Tensor&, const Tensor&, const StepContext& ctx) {
  if (!ctx.last_micro_batch) return;
  const int L = exec_.model().n_layers();
  if (layer == L - 1) {  // the first block of the backward: the head's gradients are complete
    reduced_.assign(exec_.n_stages(), false);
    reduce_stage(L + 1);
  }
}

void DataParallel::after_backward(int layer, const Tensor&, const Tensor&, const StepContext& ctx) {
  if (ctx.last_micro_batch) reduce_stage(1 + layer);
}

void DataParallel::after_model_backward(const StepContext& ctx) {
  if (!ctx.last_micro_batch) return;
  if ((int)reduced_.size() != exec_.n_stages()) reduced_.assign(exec_.n_stages(), false);  // no blocks
  for (int s = exec_.n_stages() - 1; s >= 0; --s) reduce_stage(s);
  if (extra_ && comm_.size() > 1)
    if (const Tensor t = extra_(); t.data) {
      comm_.all_reduce_tensor(t);
      ++collectives_;
    }
  comm_.wait_all();
  reduced_.clear();
}

}  // namespace lingua
