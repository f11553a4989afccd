#pragma once
// Fully sharded data parallelism (Lingua's fsdp_type: full_shard): the matmul weights of every
// block (the parameters with a compute copy: the bulk of a transformer) are split over the
// data-parallel ranks as flat shards (ParamStore Placement::FlatShard): each rank stores, and its
// AdamW updates, 1/W of their fp32 weights, gradients and moments. Everything else (norm weights,
// embedding tables of FFN variants, the embedding and the output head) stays whole on every rank and is reduced as in
// DDP (ddp.h).
//
// The step, as layer hooks on the executor:
//   forward   before block l: wait for its weights' all-gather (bf16 on CUDA, from each rank's
//             bf16 shard), queue block l + 1's (prefetch one ahead, on the communication stream).
//             Gathered once per step (first micro-batch), and by every evaluation forward.
//   backward  block l's weight gradients accumulate in full-shape fp32 buffers; after its backward
//             (last micro-batch) they are reduce-scattered into the local gradient shards, and
//             block l's whole parameters all-reduced, overlapping the backward of the blocks below.
//   AdamW     the split parameters' part of each group's gradient norm is summed over the ranks
//             (AdamW::set_split_norm_reducer), then clipping and the update of the local shards.
// HSDP (a shard size S below the world size W): the ranks form W / S shard groups of S
// consecutive ranks (ParallelLayout's numbering); the weights are split over a group, the
// gradients reduce-scattered inside it and the local shards then all-reduced over the replica
// group (the ranks with the same shard index); whole parameters are summed over both; the split
// parameters' part of the gradient norm over the shard group only (replicas hold the same shards).
//
// The gathered weights of every block stay resident between forward and backward (FSDP's
// reshard_after_forward = false: one all-gather per step instead of two); the full-shape gradient
// buffers rotate between two blocks with one micro-batch per step, one per block with gradient
// accumulation (which reduce-scatters once per step).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/dist/comm.h"
#include "lingua/dist/layout.h"
#include "lingua/exec/executor.h"
#include "lingua/optim/optimizer.h"

namespace lingua {

// Splits the matmul weights of every block over `size` ranks (this one `rank`): the shard group's
// size and this rank's place in it. Call on the CPU, after the model is built and initialised and
// before to_device (each rank uploads its shards).
void shard_block_weights(Transformer& model, int size, int rank);

// The full weights and AdamW moments of the store's flat-sharded parameters (checkpoints write
// pieces instead; for tests and tools): every rank calls it (host collectives over comm, the shard
// group) and gets them.
SplitValues gather_split_values(Communicator& comm, const ParamStore& store, const AdamW& opt);

// Every parameter's full fp32 values (or gradients: trainable ones only) by name, the split ones
// gathered over host, the shard group, and column-sliced ones over slice_group (table_parallel.h)
// (collective: every rank calls it and gets all of them). For tests and tools.
std::map<std::string, std::vector<float>> gather_full_values(Communicator& host, const ParamStore& store,
                                                             bool grads = false, Communicator* slice_group = nullptr);

class FullyShardedDataParallel final : public LayerHooks {
 public:
  // Over the ranks of comm, in shard groups of shard_size (0: all of them, FSDP; below comm's size:
  // HSDP, splitting comm into shard and replica groups). The model's block weights are sharded
  // over the shard group (shard_block_weights with shard_size and the rank's place in its group).
  // Adds itself to exec's hooks and sets opt's norm reducer; the destructor removes both.
  FullyShardedDataParallel(Executor& exec, AdamW& opt, Communicator& comm, int grad_acc_steps, int shard_size = 0);
  ~FullyShardedDataParallel() override;
  FullyShardedDataParallel(const FullyShardedDataParallel&) = delete;
  FullyShardedDataParallel& operator=(const FullyShardedDataParallel&) = delete;

  void before_forward(int layer, const Tensor& x, const StepContext& ctx) override;
  void before_backward(int layer, const Tensor& dy, const Tensor& dy_act, const StepContext& ctx) override;
  void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) override;
  bool parallel() const override { return true; }
  void after_model_backward(const StepContext& ctx) override;

  // Also sums this tensor over the ranks at the end of each step's backward (as DataParallel).
  void reduce_also(std::function<Tensor()> tensor) { extra_ = std::move(tensor); }
  size_t buffer_bytes() const;  // the gathered weights and the full-shape gradient buffers

 private:
  struct Split {  // a split parameter of a block
    int id;
    int64_t chunk;      // local numel
    int64_t at;         // elements into the block's gathered / gradient buffer
  };
  struct BlockShards {
    std::vector<Split> split;
    std::vector<int> whole;  // trainable whole parameters (all-reduced)
    int64_t size = 0;        // elements of its gathered buffer (W * chunk per split parameter)
    uint64_t gathered = 0, reduced = 0;  // tickets
    bool reduce_pending = false;
  };
  void lay_out();
  void gather(int layer);
  Tensor grad_slot(int layer) const;
  void reduce_whole_stage(int stage);
  void sum_whole(const Tensor& t);  // over every rank (shard group, then replicas)
  Communicator& last_comm() { return replica_ ? *replica_ : *comm_; }  // where marks are taken

  Executor& exec_;
  AdamW& opt_;
  Communicator& world_comm_;
  std::unique_ptr<Communicator> shard_owned_, replica_;  // HSDP's groups
  Communicator* comm_;  // the shard group (world_comm_ for FSDP)
  bool rotate_grads_;
  std::vector<BlockShards> blocks_;
  DeviceBuffer gathered_dev_, grads_dev_;  // CUDA
  std::vector<float> gathered_host_, grads_host_;  // CPU
  std::vector<bool> issued_;  // block gathers queued in the current forward
  uint64_t layout_epoch_ = 0;  // the parameters' layout lay_out() followed
  std::function<Tensor()> extra_;
};

// The data-parallel hooks of a layout on an executor: FullyShardedDataParallel when it shards,
// DataParallel with several processes, none with one. A row-sparse optimizer's rows seen are
// summed too. (The model's block weights must have been sharded before to_device when it shards.)
std::unique_ptr<LayerHooks> attach_data_parallel(const ParallelLayout& layout, Executor& exec, AdamW& opt,
                                                 Communicator& comm, int grad_acc_steps);

}  // namespace lingua
