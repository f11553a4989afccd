#pragma once
// The train state of a training checkpoint (train_state_{rank:05d}.json): what a checkpoint holds
// besides the weights and moments. Kept apart from train_checkpoint.h (which needs the model) so
// the reader can be tested and fuzzed on its own.
//   {"step": 300, "optimizer_steps": 300, "scheduler": {"last_step": 300}, "data_loader": {...}}
// plus, once the data loader was re-split over another rank count (lingua/data/resplit.h),
//   "data_resplit": {"from_ranks": 2, "at_step": 200}
// and "flops": the model FLOPs trained so far (the MFU count, all ranks; checkpoints of older
// versions lack it); "growth_ramp": G_random's ramp, in a checkpoint written while it ran.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace lingua {

struct TrainState {
  int64_t step = 0;
  int64_t optimizer_steps = 0;
  nlohmann::json data_loader;  // DataLoader::state(); checked by DataLoader::load_state
  // The last time the run resumed on another data-parallel rank count: the count of the
  // checkpoint it resumed from and its step (0, 0: never). Kept in the checkpoints after it.
  int64_t resplit_from = 0;
  int64_t resplit_step = 0;
  double flops = -1;  // < 0: not recorded
  // G_random's ramp while it runs (lingua/exec/growth_ramp.h's record, with its start step): a run
  // continued from the checkpoint, and the commands that run it, ramp as training did. null: none.
  nlohmann::json growth_ramp;
};

// The JSON text of a train state.
std::string train_state_json(const TrainState& state);
// Parses a train state. Fails (lingua::Error naming `origin` and the key) on text that is not JSON,
// not an object, a missing key, or "step" / "optimizer_steps" that are not integers in [0, 2^62]
// ("data_resplit" and "growth_ramp" are optional).
// Other keys ("scheduler", Lingua's "acc_step") are ignored.
TrainState parse_train_state(const std::string& text, const std::string& origin);

}  // namespace lingua
