#pragma once
// Data parallelism with replicated parameters (Lingua's fsdp_type: no_shard, i.e. DDP): every rank
// holds the whole model and runs its own micro-batches; the gradients are summed over the ranks
// before the optimizer, so every rank applies the same update to the same weights. Attached to an
// executor as layer hooks: on the last micro-batch of a step, each stage's gradients are queued
// for an all-reduce as soon as its backward has written them (the head's first, then block by
// block from the top, the embedding's last), so the communication overlaps the backward of the
// stages below; after the embedding's, the library stream waits for all of them. Earlier
// micro-batches of a step only accumulate (no communication). The loss scale makes the sum a mean:
// 1 / (tokens per step over all ranks).
//
// The reduction is fp32 (NCCL's ring/tree sums are deterministic for a fixed world size and
// message layout, so runs repeat bitwise). With reduce dtype bf16 (distributed.reduce_dtype) the
// gradients travel as bf16, half the bytes: each piece is rounded into a bf16 buffer (an extra
// half-size copy of the reduced gradients), summed, and written back to fp32 after the last one. Each stage's gradients are one contiguous range of the
// gradient buffer, one collective per stage (a transformer block is MBs, well above NCCL's latency
// regime). Column-sliced parameters (table_parallel.h) are left out (the table-parallel layer
// reduces them over their replica group): such a stage is reduced in the pieces between them.
#include <functional>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/dist/comm.h"
#include "lingua/exec/executor.h"

namespace lingua {

// The gradients of a stage that data parallelism sums over every rank: its range without the
// column-sliced parameters' (one piece, the whole range, when there are none).
std::vector<Tensor> data_parallel_pieces(const Executor& exec, int stage);

class DataParallel final : public LayerHooks {
 public:
  // Adds itself to exec's hooks; the destructor removes it. comm: over the data-parallel ranks,
  // on the executor's device (World::tensors).
  DataParallel(Executor& exec, Communicator& comm, DType reduce_dtype = DType::f32);
  ~DataParallel() override;
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  void before_backward(int layer, const Tensor& dy, const Tensor& dy_act, const StepContext& ctx) override;
  void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) override;
  bool parallel() const override { return true; }
  void after_model_backward(const StepContext& ctx) override;

  // Also sums this tensor (on the device) over the ranks at the end of each step's backward: the
  // rows a row-sparse optimizer group updates (AdamW::rows_seen), which must be the rows any rank
  // saw, so every rank updates the same ones. Called at each step (the tensor may move).
  void reduce_also(std::function<Tensor()> tensor) { extra_ = std::move(tensor); }

  int64_t collectives() const { return collectives_; }  // queued so far (tests)

 private:
  void reduce_stage(int stage);
  Tensor bf16_buffer(int64_t n);  // the next n elements of the bf16 exchange buffer
  Executor& exec_;
  Communicator& comm_;
  DType reduce_dtype_;
  DeviceBuffer bf16_dev_;                          // CUDA
  std::vector<uint16_t> bf16_host_;                // CPU
  int64_t bf16_used_ = 0;
  std::vector<std::pair<Tensor, Tensor>> cast_back_;  // (fp32 piece, its bf16 sum) after the wait
  std::function<Tensor()> extra_;
  std::vector<bool> reduced_;  // per stage, in the current backward
  int64_t collectives_ = 0;
};

}  // namespace lingua
