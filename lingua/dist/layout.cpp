#include "lingua/dist/layout.h"

#include "lingua/core/error.h"

namespace lingua {

std::string ParallelLayout::describe() const {
  if (world == 1) return "one process";
  const std::string tables_note =
      (tables > 1 ? ", per-layer tables split over " + std::to_string(tables) + " processes" : std::string()) +
      (reduce_dtype == DType::bf16 ? ", gradients reduced in bf16" : "");
  if (hybrid())
    return "HSDP over " + std::to_string(world) + " processes (" + std::to_string(replicate) + " replicas x " +
           std::to_string(shard) + " shards)" + tables_note;
  return std::string(fsdp() ? "FSDP" : "DDP") + " over " + std::to_string(world) + " processes" + tables_note;
}

ParallelLayout resolve_parallel_layout(const DistributedConfig& d, int world) {
  ParallelLayout l;
  l.world = world;
  l.replicate = world;
  const std::string type = d.fsdp_type.value_or("no_shard");
  if (world == 1) {
    if (d.stem_parallel_size > 1)
      l.notes.push_back("distributed.stem_parallel_size has no effect with one process: the tables stay whole");
    if (d.dp_shard > 1 || d.dp_replicate > 1)
      l.notes.push_back("distributed.dp_shard and dp_replicate have no effect with one process (the launcher starts "
                        "the processes: mpirun, torchrun, srun or `lingua launch`)");
    return l;
  }
  LINGUA_CHECK(d.stem_parallel_size >= 1 && world % d.stem_parallel_size == 0, "config key 'distributed.stem_parallel_size' is ",
               d.stem_parallel_size, " but ", world,
               " processes were started: the table group size must divide the number of processes");
  l.tables = d.stem_parallel_size;
  l.reduce_dtype = d.reduce_dtype == "bf16" ? DType::bf16 : DType::f32;
  LINGUA_CHECK(l.reduce_dtype == DType::f32 || type == "no_shard" || d.dp_shard == 1,
               "config key 'distributed.reduce_dtype' is bf16: bf16 gradient reduction is DDP's "
               "(fsdp_type no_shard); FSDP reduce-scatters in fp32 (set reduce_dtype: fp32)");
  if (type == "no_shard") {
    LINGUA_CHECK(d.dp_shard == 1, "config key 'distributed.dp_shard' is ", d.dp_shard,
                 ": sharding needs distributed.fsdp_type: full_shard (no_shard is DDP, every process holds the "
                 "whole model)");
  } else {
    LINGUA_CHECK(world % d.dp_shard == 0, "config key 'distributed.dp_shard' is ", d.dp_shard, " but ", world,
                 " processes were started: the shard group size must divide the number of processes");
    l.shard = d.dp_shard;
    l.replicate = world / d.dp_shard;
    if (l.shard == 1)
      l.notes.push_back("distributed.fsdp_type full_shard with distributed.dp_shard 1 shards nothing (as in Lingua, "
                        "dp_shard is the sharding group): DDP over " + std::to_string(world) +
                        " processes; set dp_shard " + std::to_string(world) + " for FSDP");
  }
  if (d.dp_replicate != 1 && d.dp_replicate != l.replicate)
    l.notes.push_back("distributed.dp_replicate is " + std::to_string(d.dp_replicate) + " but " + std::to_string(world) +
                      " processes were started: " + std::to_string(l.replicate) +
                      " replicas (as in Lingua, it follows the number of processes)");
  return l;
}

}  // namespace lingua
