#pragma once
// The training loop: config -> model, optimizer, data -> steps, with metrics, validation,
// checkpoints and exact resumption. Apps call train(); tests call it with small configs.
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

class AdamW;
class DataLoader;
class Executor;
class LayerHooks;
class Transformer;

struct TrainResult {
  int64_t start_step = 0;          // steps already done when this run began (resume)
  int64_t final_step = 0;
  std::vector<double> losses;      // mean training loss of each step run here
  double unigram_entropy = 0;      // nats/token, when logging.unigram_baseline_tokens > 0
  int stop_signal = 0;             // the signal that stopped the run early (a checkpoint was written), 0: none
  bool stopped_by_hook = false;   // TrainHooks::after_step stopped it
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

// Trains per cfg: resumes from dump_dir's newest checkpoint, or starts (init_ckpt_path, fresh);
// a config with growth.step trains the source model, grows it and trains on (growth_run.cpp).
TrainResult train(const TrainConfig& cfg, const TrainHooks& hooks = {});

// One stretch of a run with one model: the whole run, or either side of a growth step.
struct TrainPhase {
  int64_t first_step = 0;  // the LR schedule's step 0
  int64_t end_step = 0;    // the phase's last step (0: cfg.steps and any replayed steps)
  const TrainConfig* run_config = nullptr;  // written as dump_dir/config.yaml (null: cfg)
  // Set when the phase starts with a model that grew: its weights (called on the whole model before
  // any sharding), the checkpoint whose data-loader state it reads on from (the phase starts at
  // first_step, never resuming), and optionally the optimizer (carried moments).
  std::function<void(Transformer& model)> init_model;
  std::string grown_from;
  std::function<void(const Transformer& model, AdamW& opt)> init_optimizer;
  // Called once the executor exists: the phase's own layer hooks (G_random's ramp), which the
  // phase adds to the executor before any data-parallel hooks and keeps until it ends (before the
  // model goes); then `at_step` with each optimizer step (0-based: the steps taken) before the
  // model is set up for it.
  std::function<std::unique_ptr<LayerHooks>(Executor& exec)> attach;
  std::function<void(int64_t step)> at_step;
  // What a checkpoint written at `step` keeps in its train state's "growth_ramp" (null: nothing).
  std::function<nlohmann::json(int64_t step)> checkpoint_ramp;
  // Called once when the phase starts with a model that grew, after the data loader is set to read
  // on (G_learn learns its map from the batches it takes there); returns the tokens it read (over
  // every rank), whose forward and backward count in the FLOPs trained.
  std::function<int64_t(Executor& exec, DataLoader& loader)> prepare;
};
TrainResult train_phase(const TrainConfig& cfg, const TrainHooks& hooks, const TrainPhase& phase);

// Checkpoint root of a config: checkpoint.path or dump_dir/checkpoints.
std::string checkpoint_root(const TrainConfig& cfg);

}  // namespace lingua
