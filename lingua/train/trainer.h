#pragma once
// The training loop: config -> model, optimizer, data -> steps, with metrics, validation,
// checkpoints and exact resumption. Apps call train(); tests call it with small configs.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

class Executor;

struct TrainResult {
  int64_t start_step = 0;          // steps already done when this run began (resume)
  int64_t final_step = 0;
  std::vector<double> losses;      // mean training loss of each step run here
  double unigram_entropy = 0;      // nats/token, when logging.unigram_baseline_tokens > 0
  int stop_signal = 0;             // the signal that stopped the run early (a checkpoint was written), 0: none
  int graph_captures = 0;          // CUDA graphs the training steps captured (0: every step eager)
};

struct TrainHooks {
  // Called after each optimizer step; returning false stops the run (tests simulate crashes).
  std::function<bool(int64_t step)> after_step;
  bool quiet = false;  // no status lines on stderr
  // Called once before the first step with the executor (tests add layer hooks).
  std::function<void(Executor& exec)> at_start = {};
  // Called once after the last step with the trained model's executor (tests compare it with its
  // checkpoint).
  std::function<void(Executor& exec)> at_end = {};
  // With several processes, called on each rank before it writes its checkpoint shard into the
  // temporary directory (tests make one rank fail: no checkpoint may be marked complete).
  std::function<void(int rank, const std::string& tmp_dir)> before_shard_write = {};
};

TrainResult train(const TrainConfig& cfg, const TrainHooks& hooks = {});

// Checkpoint root of a config: checkpoint.path or dump_dir/checkpoints.
std::string checkpoint_root(const TrainConfig& cfg);

}  // namespace lingua
