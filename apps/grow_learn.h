#pragma once
// G_learn for `lingua grow op=learn` (apps/grow.cpp): LiGO's map (lingua/exec/growth_learn.h)
// trained on the target's data after the source run's, as a training run's growth.op=learn does.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lingua/checkpoint/train_checkpoint.h"

namespace lingua::app {

struct GrowLearnOptions {
  int64_t steps = 0;           // Adam steps on the map (0: its start, G_split / G_stack)
  double lr = 0;               // their learning rate
  std::string device = "cpu";  // where the target runs (cpu | cuda)
  uint64_t seed = 0;           // G_split's choice of copied units (the map's start)
};

struct GrowLearnResult {
  int64_t steps = 0;
  double first_loss = 0, last_loss = 0;  // the map's mean loss on its first and last step's batches
  int64_t tokens = 0;                     // tokens the map read (all ranks' loaders)
  int ranks = 0;                          // the source checkpoint's data-loader states
  // train_state_{rank}.json of the grown checkpoint: the source's, each with its data loader
  // advanced past the batches the map read.
  std::vector<std::pair<std::string, std::string>> train_states;
};

// Grows src's model into `target` (built from the target config on the host, not grown yet) with
// G_learn: the map starts at G_split (in depth: G_stack) on `list`, runs the target on o.device
// (moved there) and takes o.steps Adam steps, each on one batch of `data` from every rank's loader
// of the source checkpoint (each restored from its train state and read on: with several ranks,
// as a DDP run's G_learn does, the step follows their batches' summed gradient, the mean loss);
// the target holds the map's last value. Errors name the key (learn_steps, learn_lr, data.*, device).
GrowLearnResult grow_learned(const LoadedModel& src, Transformer& target, const DataConfig& data,
                             const std::vector<int>& list, const GrowLearnOptions& o);

}  // namespace lingua::app
