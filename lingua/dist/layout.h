#pragma once
// How a run's processes divide the work, from Lingua's distributed.* keys and the number of
// processes the launcher started (Lingua's rules: dp_shard is the size of a sharding group,
// dp_replicate follows the world size):
//   fsdp_type no_shard (the default)  DDP over every process; dp_shard must be 1.
//   fsdp_type full_shard, dp_shard S  S == world: FSDP over every process; S == 1: shards nothing,
//                                     DDP; 1 < S < world: HSDP, world / S replicas of S shards.
// distributed.stem_parallel_size P splits the per-layer token-indexed tables (of the model.ffn
// variants that have them) by columns over groups of P consecutive ranks (table_parallel.h),
// orthogonal to the above; P must divide the number of processes.
// Ranks are numbered replica * S + shard: a shard group is S consecutive ranks (one node's GPUs
// when S is the GPUs per node, so the all-gathers stay inside a node).
// With one process, every size is accepted with a note (nothing to divide).
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/core/tensor.h"

namespace lingua {

struct ParallelLayout {
  int world = 1;
  int replicate = 1, shard = 1;  // replicate x shard = world
  int tables = 1;                // ranks a per-layer token-indexed table is split over by columns
  DType reduce_dtype = DType::f32;  // DDP's gradient all-reduce (distributed.reduce_dtype)
  bool fsdp() const { return shard > 1; }
  bool hybrid() const { return shard > 1 && replicate > 1; }  // HSDP
  int shard_rank(int rank) const { return rank % shard; }     // within its shard group
  int replica_rank(int rank) const { return rank / shard; }   // which shard group
  // "DDP over 4 processes", "FSDP over 4 processes", "HSDP over 4 processes (2 replicas x 2 shards)",
  // "one process"
  std::string describe() const;
  std::vector<std::string> notes;  // settings changed or ignored, for the log
};

// Fails naming the key when the sizes do not fit the world size.
ParallelLayout resolve_parallel_layout(const DistributedConfig& d, int world);

}  // namespace lingua
