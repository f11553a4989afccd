#pragma once
// Table parallelism (Lingua's distributed.stem_parallel_size P): the per-layer tables looked
// up by token (the block parameters marked `embedding`, e.g. [vocab, hidden] tables) are split by
// columns over groups of P consecutive ranks (rank r holds columns slice r % P of group r / P:
// Placement::ColumnSlice), so a table P times larger than one GPU's share fits.
//
//   forward   (StepContext::sliced_tables) the group's token ids are all-gathered; each rank looks
//             its columns up for every one of them and an all-to-all brings each rank the full
//             rows of its own tokens.
//   backward  the reverse: each rank's row gradients are split by columns, exchanged by an
//             all-to-all, and scatter-added into the local columns by the (deterministic)
//             embedding op: the group's sum.
//   replicas  with more ranks than P, the ranks holding the same slice (r % P equal: the replica
//             group) all-reduce its gradient after the layer's backward (last micro-batch), so
//             replicas stay equal (the original forgot this and its replicas drift).
//   AdamW     a sliced table's part of its group's gradient norm is summed over the slice group
//             (AdamW::set_split_norm_reducer for column slices); row-sparse AdamW updates the
//             rows seen by any rank (the data-parallel layer sums the rows seen over every rank).
// The data-parallel layer (ddp.h, fsdp.h) leaves column-sliced parameters to this one.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lingua/dist/comm.h"
#include "lingua/exec/executor.h"
#include "lingua/model/sliced_table.h"
#include "lingua/optim/optimizer.h"

namespace lingua {

// Splits the tables of every block by columns over `size` ranks (this one `rank`, its place in its
// group). Call on the CPU after the model is built and before to_device. Fails naming the key when
// the model has no such table or a table's columns do not divide by size.
void slice_tables(Transformer& model, int size, int rank);

// The full values of a column-sliced parameter from its group's slices (host collective over the
// slice group: every rank calls it with its local [rows, C] values).
std::vector<float> gather_column_slices(Communicator& group, const ParamInfo& p, const std::vector<float>& local);
// The full weights and AdamW moments of the store's column-sliced parameters (checkpoints write
// the slices instead; for tests and tools).
SplitValues gather_sliced_values(Communicator& group, const ParamStore& store, const AdamW& opt);

class TableParallel final : public LayerHooks, public SlicedTableLookup {
 public:
  // Over comm's ranks (tensor collectives on the model's device) in groups of group_size; the
  // model's tables are sliced (slice_tables with group_size and rank % group_size). Attaches itself
  // to exec (hooks and the sliced lookups) and opt (the norm reducer); the destructor detaches.
  TableParallel(Executor& exec, AdamW& opt, Communicator& comm, int group_size);
  ~TableParallel() override;
  TableParallel(const TableParallel&) = delete;
  TableParallel& operator=(const TableParallel&) = delete;

  void forward(const Tensor& ids, const Tensor& slice, const Tensor& out, Arena& scratch) override;
  void backward(const Tensor& ids, const Tensor& dout, const Tensor& dslice, Arena& scratch) override;
  void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) override;
  bool parallel() const override { return true; }
  void after_model_backward(const StepContext& ctx) override;

 private:
  Tensor group_ids(const Tensor& ids, Arena& scratch);  // [P * N] i32: the group's ids by rank

  Executor& exec_;
  AdamW& opt_;
  std::unique_ptr<Communicator> group_, replica_;  // the slice group; the ranks of this slice (null: one group)
  std::vector<std::vector<int>> sliced_;           // per block: its column-sliced trainable parameters
};

}  // namespace lingua
