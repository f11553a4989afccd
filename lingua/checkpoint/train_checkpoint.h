#pragma once
// The layout of a checkpoint step directory, and the only code that knows it:
//   <root>/{step:010d}/
//     consolidated.safetensors   the weights, by parameter name
//     optimizer.safetensors      AdamW moments: exp_avg.<name>, exp_avg_sq.<name> (trainable ones)
//     params.json                the training config (+ parameter counts)
//     train_state_{rank:05d}.json  step, optimizer steps, scheduler, data-loader state
//     <extra files>              a checkpoint-editing command's record, say
//     complete                   written last (checkpoint.h): a directory without it is ignored
// The trainer, `lingua generate`, `lingua eval` and the checkpoint-editing commands all go through
// these functions.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lingua/checkpoint/train_state.h"
#include "lingua/config/train_config.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/executor.h"
#include "lingua/model/transformer.h"
#include "lingua/optim/optimizer.h"

namespace lingua {

struct CheckpointFiles {
  static constexpr const char* weights = "consolidated.safetensors";
  static constexpr const char* optimizer = "optimizer.safetensors";
  static constexpr const char* params = "params.json";
  static std::string train_state(int rank);                       // "train_state_00000.json"
  static std::string moment(int which, const std::string& param);  // 0: "exp_avg.<param>", 1: "exp_avg_sq.<param>"
};

// Writes a complete training checkpoint <root>/<step>/ (atomically: see save_checkpoint_dir).
void save_training_checkpoint(const std::string& root, const TrainConfig& cfg, const Transformer& model,
                              const AdamW& opt, const TrainState& state);
// Reads one back into a model and optimizer built from the same config; returns its train state.
TrainState load_training_checkpoint(const std::string& dir, Transformer& model, AdamW& opt);

// Writes a checkpoint with weights and config only (for generation, evaluation and
// init_ckpt_path, not for resuming), plus `extra` files (name, content). Returns its directory.
std::string save_model_checkpoint(const std::string& root, int64_t step, const TrainConfig& cfg,
                                  const Transformer& model,
                                  const std::vector<std::pair<std::string, std::string>>& extra = {});
// Loads the weights of a checkpoint step directory, or of a weights file.
void load_weights(Transformer& model, const std::string& dir_or_file);

// A step directory from `path`: the directory itself when it is a complete checkpoint, else the
// newest complete checkpoint of a dump_dir (its checkpoints/) or of a checkpoint root.
std::string resolve_checkpoint_dir(const std::string& path);
// The step of a checkpoint directory: its canonical name, else its train state, else 0.
int64_t checkpoint_step(const std::string& dir);

// A trained model loaded for inference, with the config it was trained with and an executor to
// run it.
struct LoadedModel {
  TrainConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Executor> exec;  // runs *model: declared after it, so destroyed first
  std::string checkpoint_dir;
  LoadedModel() = default;
  LoadedModel(LoadedModel&&) = default;
  LoadedModel& operator=(LoadedModel&&) = delete;  // would free a model before its executor
};
// `path`: as resolve_checkpoint_dir. `tokenizer_path` overrides the checkpoint's (sp).
LoadedModel load_model(const std::string& path, const std::string& tokenizer_path = "",
                       const std::string& device = "cpu");

}  // namespace lingua
