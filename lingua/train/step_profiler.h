#pragma once
// Profiles a window of training steps (profiling.* config): starts the Profiler before step
// `profile_warmup` (0-based, counted from `first_step`), stops after `profile_steps` steps, then
// writes <dump_dir>/<trace_folder>/trace_step<N>.json (Chrome trace) and summary_step<N>.txt.
#include <string>

#include "lingua/config/train_config.h"
#include "lingua/core/tensor.h"

namespace lingua {

class StepProfiler {
 public:
  StepProfiler(const ProfilingConfig& cfg, const std::string& dump_dir, Device device, int64_t first_step);
  ~StepProfiler();
  void before_step(int64_t step);  // step: optimizer steps done so far
  bool after_step(int64_t step);  // true when this step ended the window (files written)
  const std::string& summary() const { return summary_; }  // after the window, else empty
  const std::string& trace_path() const { return trace_path_; }

 private:
  ProfilingConfig cfg_;
  std::string dir_;
  Device device_;
  int64_t begin_ = -1, recording_from_ = -1;
  std::string summary_, trace_path_;
};

}  // namespace lingua
