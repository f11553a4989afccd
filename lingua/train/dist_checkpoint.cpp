#include "lingua/train/dist_checkpoint.h"

#include <cstdio>
#include <filesystem>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/sharded.h"
#include "lingua/checkpoint/train_checkpoint.h"

namespace lingua {

void save_sharded_training_checkpoint(Communicator& host, const std::string& root, const TrainConfig& cfg,
                                      const Transformer& model, const AdamW& opt, const TrainState& mine, int keep,
                                      const std::function<void(int, const std::string&)>& before_write) {
  const int rank = host.rank(), world = host.size();
  // This rank's files; "" when written, else why not.
  auto write_mine = [&](const std::string& tmp) -> std::string {
    try {
      if (before_write) before_write(rank, tmp);
      LINGUA_CHECK(std::filesystem::is_directory(tmp), "cannot see ", tmp,
                   " (rank 0's temporary step directory): dump_dir must be on a filesystem every node shares");
      write_checkpoint_shard(tmp, model.params(), &opt, rank, world);
      write_text_file_atomic(tmp + "/" + CheckpointFiles::train_state(rank), train_state_json(mine));
      return "";
    } catch (const std::exception& e) {
      return *e.what() ? e.what() : "unknown error";
    }
  };
  // The same collectives on every path: the temporary directory (empty: rank 0 failed before
  // making it), every rank's result, rank 0's outcome.
  std::string outcome;
  if (rank == 0) {
    bool announced = false;
    try {
      save_checkpoint_dir(root, mine.step, [&](const std::string& tmp) {
        host.broadcast_string(tmp, 0);
        announced = true;
        const std::vector<std::string> errors = host.all_gather_strings(write_mine(tmp));
        for (int r = 0; r < world; ++r)
          LINGUA_CHECK(errors[r].empty(), "checkpoint of step ", mine.step, " not saved: rank ", r,
                       " could not write its shard: ", errors[r]);
        write_text_file_atomic(tmp + "/" + CheckpointFiles::params, params_json(cfg, model.param_counts()));
      });
      try {  // (the checkpoint is complete: a failed clean-up is not a failed save)
        prune_checkpoints(root, keep);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "lingua: warning: pruning old checkpoints in %s: %s\n", root.c_str(), e.what());
      }
    } catch (const std::exception& e) {
      outcome = *e.what() ? e.what() : "checkpoint of step " + std::to_string(mine.step) + " not saved";
      if (!announced) host.broadcast_string("", 0);
    }
  } else {
    const std::string tmp = host.broadcast_string("", 0);
    if (!tmp.empty()) host.all_gather_strings(write_mine(tmp));
  }
  outcome = host.broadcast_string(outcome, 0);
  if (!outcome.empty()) fail(outcome);
}

}  // namespace lingua
