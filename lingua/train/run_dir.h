#pragma once
// A dump_dir holds one run:
//   dump_dir/config.yaml          the resolved config of the run
//   dump_dir/metrics.jsonl        one line per logged step
//   dump_dir/metrics.eval.jsonl   one line per validation
//   dump_dir/checkpoints/         (or checkpoint.path)
//   dump_dir/.lock                held while a process trains in the directory
// RunDir opens it for `lingua train`: creates it (an error naming the path when it cannot be
// written), takes the lock (a second process on the same dump_dir is refused, naming the first),
// refuses to resume another run's checkpoints when the model differs, and keeps exactly one
// metrics line per logged step across crashes and resumes.
#include <cstdint>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

// How two configs differ: one "key: old -> new" line per dotted key whose value changed.
struct ConfigDiff {
  std::vector<std::string> refused;  // model.* and data.tokenizer.*: the weights would not fit
  std::vector<std::string> allowed;  // everything else (optimizer, schedule, steps, logging, ...)
};
ConfigDiff diff_configs(const TrainConfig& old_cfg, const TrainConfig& new_cfg);

class RunDir {
 public:
  // Creates dump_dir and the checkpoint root and takes the lock. Errors name the path and the
  // reason (read-only, a file in the way, another process holding the lock and its pid).
  RunDir(const TrainConfig& cfg, const std::string& checkpoint_root);
  ~RunDir();  // releases the lock
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  // Before resuming the checkpoint `dir`: its params.json against cfg. A differing model or
  // tokenizer is an error naming every differing key; other changes are returned (to print).
  // A params.json that cannot be read is left to the checkpoint loader to report.
  std::vector<std::string> check_resume(const std::string& dir, const TrainConfig& cfg) const;
  // Writes config.yaml (atomically).
  void write_config(const TrainConfig& cfg) const;
  // Drops the lines of steps after `step` from the metrics files (the steps a crashed run logged
  // after its last checkpoint, which the resumed run logs again). Returns how many were dropped.
  int64_t truncate_metrics(int64_t step) const;

  std::string metrics_path() const;
  std::string eval_metrics_path() const;

 private:
  std::string dir_;
  int lock_fd_ = -1;
};

}  // namespace lingua
