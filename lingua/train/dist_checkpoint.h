#pragma once
// Saving a training checkpoint from several processes (checkpoint/sharded.h has the format):
// every rank writes its shard and its train state into the step's temporary directory at the same
// time; rank 0 commits the directory (params.json, then the `complete` marker and the rename) only
// when every rank reports its files written, so a failure on any rank leaves no complete
// checkpoint, and every rank ends with the same outcome (the same error when it failed).
#include <functional>
#include <string>

#include "lingua/checkpoint/train_state.h"
#include "lingua/config/train_config.h"
#include "lingua/dist/comm.h"
#include "lingua/model/transformer.h"
#include "lingua/optim/optimizer.h"

namespace lingua {

// Collective over `host` (every rank of the run). `mine`: this rank's train state. Keeps `keep`
// checkpoints (prune_checkpoints) after a successful save. `before_write` (tests) runs on each rank
// with the temporary directory before it writes; an exception there counts as that rank's failure.
void save_sharded_training_checkpoint(Communicator& host, const std::string& root, const TrainConfig& cfg,
                                      const Transformer& model, const AdamW& opt, const TrainState& mine, int keep,
                                      const std::function<void(int rank, const std::string& tmp_dir)>& before_write = {});

}  // namespace lingua
