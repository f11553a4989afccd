#pragma once
// The layout of a checkpoint step directory, and the only code that knows it:
//   <root>/{step:010d}/
//     consolidated.safetensors   the weights, by parameter name
//     optimizer.safetensors      AdamW moments: exp_avg.<name>, exp_avg_sq.<name> (trainable ones)
//     (or, saved by several processes: shard_{rank:05d}.safetensors, each rank's share of both,
//     written in parallel: sharded.h; `lingua consolidate` turns them into the two files above)
//     params.json                the training config (+ parameter counts)
//     train_state_{rank:05d}.json  step, optimizer steps, scheduler, data-loader state
//     <extra files>              a checkpoint-editing command's record, say
//     complete                   written last (checkpoint.h): a directory without it is ignored
// The trainer, `lingua generate`, `lingua eval` and the checkpoint-editing commands all go through
// these functions.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/train_state.h"
#include "lingua/config/train_config.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/executor.h"
#include "lingua/exec/growth_ramp.h"
#include "lingua/model/transformer.h"
#include "lingua/optim/optimizer.h"

namespace lingua {

struct CheckpointFiles {
  static constexpr const char* weights = "consolidated.safetensors";
  static constexpr const char* optimizer = "optimizer.safetensors";
  static constexpr const char* params = "params.json";
  static constexpr const char* growth = "growth.json";  // a grown model's record (lingua grow)
  static std::string train_state(int rank);                       // "train_state_00000.json"
  static std::string moment(int which, const std::string& param);  // 0: "exp_avg.<param>", 1: "exp_avg_sq.<param>"
};

// Writes a complete training checkpoint <root>/<step>/ (atomically: see save_checkpoint_dir), with
// one train state per data-parallel rank (states[r] as train_state_{r}.json): the single-file
// form, from a model whose parameters are all whole (several processes write shards instead:
// train/dist_checkpoint.h). It loads with any number of processes and any parallelism.
void save_training_checkpoint(const std::string& root, const TrainConfig& cfg, const Transformer& model,
                              const AdamW& opt, const std::vector<TrainState>& states);
inline void save_training_checkpoint(const std::string& root, const TrainConfig& cfg, const Transformer& model,
                                     const AdamW& opt, const TrainState& state) {
  save_training_checkpoint(root, cfg, model, opt, std::vector<TrainState>{state});
}
// Reads one back into a model and optimizer built from the same config; returns the train state
// of data-parallel rank `rank` of `world`. The data loader's state is per rank: a checkpoint of
// another rank count has its ranks' loader states re-split over `world` (lingua/data/resplit.h:
// what is replayed), and the state returned says so (resplit_from = the saved count, resplit_step
// = its step); every rank of the new run computes the same split. Every weight, every trainable
// parameter's moments and the optimizer's step count are set, so a successful load overwrites
// whatever an earlier, failed one left. A train state that does not parse, or states that cannot
// be re-split (unreadable, from other configs), fail before the model is touched; on a corrupt
// tensor file (truncated, bad header, checksum mismatch) fails naming the file; tensors are read
// and set one by one, so such a failure leaves the model and optimizer partly loaded.
TrainState load_training_checkpoint(const std::string& dir, Transformer& model, AdamW& opt, int rank = 0,
                                    int world = 1);
// The train state of data-parallel rank `rank` of `world` in a checkpoint (re-split as
// load_training_checkpoint does when the checkpoint has another rank count); nullopt when the
// checkpoint has no train state (a weights-only checkpoint).
std::optional<TrainState> read_train_state(const std::string& dir, int rank = 0, int world = 1);
// Whether a checkpoint has AdamW moments (a training checkpoint), single-file or sharded.
bool has_optimizer_state(const std::string& dir);
class CheckpointTensors;  // sharded.h
bool has_optimizer_state(const CheckpointTensors& tensors);
// How many train_state_*.json files (data-parallel ranks) a checkpoint holds.
int checkpoint_rank_count(const std::string& dir);

// A complete checkpoint that failed to load on resume.
struct SkippedCheckpoint {
  std::string path;    // the step directory, as listed
  std::string reason;  // the error
  std::string moved_to;  // where it was set aside (set_aside_corrupt_checkpoint)
};
struct ResumedCheckpoint {
  std::string path;  // the step directory loaded
  TrainState state;
  std::vector<SkippedCheckpoint> skipped;  // newer ones that failed, newest first
};
// Resuming a run: loads the newest complete checkpoint under `root` that loads, trying them newest
// first. A checkpoint "loads" when load_training_checkpoint succeeds, its train state's step is its
// directory's, and `load_rest` (the caller's part, e.g. the data loader's state; may be empty)
// succeeds; any exception on the way counts as corruption and the next older one is tried. The
// ones that failed are then set aside (set_aside_corrupt_checkpoint) and listed in `skipped`, so
// that the checkpoints the resumed run writes are the newest and pruning keeps them.
// nullopt when there is no complete checkpoint. When none loads, fails naming each with its error
// and sets nothing aside (a mismatched config fails on all of them; starting from scratch instead
// would overwrite them).
// `rank`, `world`: as load_training_checkpoint (a checkpoint of another rank count loads, re-split).
std::optional<ResumedCheckpoint> load_latest_training_checkpoint(
    const std::string& root, Transformer& model, AdamW& opt,
    const std::function<void(const TrainState&)>& load_rest = {}, int rank = 0, int world = 1);

// Writes a checkpoint with weights and config only (for generation, evaluation and
// init_ckpt_path, not for resuming), plus `extra` files (name, content). Returns its directory.
std::string save_model_checkpoint(const std::string& root, int64_t step, const TrainConfig& cfg,
                                  const Transformer& model,
                                  const std::vector<std::pair<std::string, std::string>>& extra = {});
// Loads the weights of a checkpoint step directory, or of a weights file. The module a model
// creates (model.create_module_name) keeps its initial values where the checkpoint lacks it (the
// base model's checkpoint).
void load_weights(Transformer& model, const std::string& dir_or_file);

// A step directory from `path`: the directory itself when it is a complete checkpoint, else the
// newest complete checkpoint of a dump_dir (its checkpoints/) or of a checkpoint root.
std::string resolve_checkpoint_dir(const std::string& path);
// The step of a checkpoint directory: its canonical name, else its train state, else 0.
int64_t checkpoint_step(const std::string& dir);

// The G_random ramp a checkpoint step directory was written under (its train state's
// "growth_ramp": lingua/exec/growth_ramp.h), if any.
std::optional<RecordedRamp> checkpoint_ramp(const std::string& dir);

// A trained model loaded for inference, with the config it was trained with and an executor to
// run it. A checkpoint written mid-ramp (checkpoint_ramp) runs with its G_random ramp at its step,
// as training ran it.
struct LoadedModel {
  TrainConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<LayerHooks> ramp;  // on *exec (null: none)
  std::unique_ptr<Executor> exec;  // runs *model: declared after it, so destroyed first
  std::string checkpoint_dir;
  LoadedModel() = default;
  LoadedModel(LoadedModel&&) = default;
  LoadedModel& operator=(LoadedModel&&) = delete;  // would free a model before its executor
};
// `path`: as resolve_checkpoint_dir. `tokenizer_path` overrides the checkpoint's (sp). `adjust`
// changes the config read from params.json before the model is built (inference-time keys, e.g.
// model.structured.premerge_max_tokens); keys that change parameters must not be touched.
LoadedModel load_model(const std::string& path, const std::string& tokenizer_path = "",
                       const std::string& device = "cpu",
                       const std::function<void(TrainConfig&)>& adjust = nullptr);

}  // namespace lingua
