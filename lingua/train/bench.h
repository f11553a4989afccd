#pragma once
// `lingua bench`: step time, tokens/s, MFU and peak memory of a training config on random
// tokens (forward, backward, gradient clipping and the AdamW step included), as the PyTorch
// anchor measures them.
#include <map>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

struct BenchResult {
  std::string impl, device;
  double step_ms = 0, tokens_per_s = 0, mfu = 0, peak_mem_gib = 0, loss = 0;
  std::vector<double> losses;  // every step's loss, warmup steps included (reference-loss checks)
  int64_t total_params = 0, active_params = 0;
  int gpus = 1;              // processes (data parallel): tokens_per_s is their sum; mfu, peak per GPU
  std::string dist = "none";  // "none", "ddp", "fsdp", "hsdp"
  std::string ffn_layers;                       // which FFN variant runs where (Transformer::describe_ffn)
  std::map<std::string, bool> row_sparse_groups;  // optimizer groups other than "default": row-sparse?
  std::string profile, trace_path;  // with profiling.run: the per-op summary and the Chrome trace
  std::string json(const TrainConfig& cfg) const;  // one line for bench/results/*.jsonl
};

BenchResult run_bench(const TrainConfig& cfg);

}  // namespace lingua
