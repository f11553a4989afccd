#include "lingua/train/step_profiler.h"

#include <filesystem>
#include <fstream>

#include "lingua/core/profiler.h"

namespace lingua {

StepProfiler::StepProfiler(const ProfilingConfig& cfg, const std::string& dump_dir, Device device, int64_t first_step)
    : cfg_(cfg), device_(device) {
  if (!cfg.run) return;
  LINGUA_CHECK(cfg.profile_steps > 0, "profiling.profile_steps must be positive (got ", cfg.profile_steps, ")");
  LINGUA_CHECK(cfg.profile_warmup >= 0, "profiling.profile_warmup must be >= 0 (got ", cfg.profile_warmup, ")");
  dir_ = (std::filesystem::path(dump_dir.empty() ? "." : dump_dir) / cfg.trace_folder).string();
  begin_ = first_step + cfg.profile_warmup;
}

StepProfiler::~StepProfiler() {
  if (recording_from_ >= 0) Profiler::instance().stop();  // an exception mid-window: drop it
}

void StepProfiler::before_step(int64_t step) {
  if (begin_ >= 0 && step == begin_ && recording_from_ < 0) {
    Profiler::instance().start(device_);
    recording_from_ = step;
  }
  if (recording_from_ >= 0) Profiler::instance().push("step");
}

bool StepProfiler::after_step(int64_t step) {
  if (recording_from_ < 0) return false;
  Profiler::instance().pop();
  if (step - recording_from_ < cfg_.profile_steps) return false;
  auto events = Profiler::instance().stop();
  const int steps = (int)(step - recording_from_);
  recording_from_ = -1;
  begin_ = -1;
  const std::string tag = "step" + std::to_string(step);
  trace_path_ = (std::filesystem::path(dir_) / ("trace_" + tag + ".json")).string();
  write_chrome_trace(trace_path_, events);
  summary_ = "per-op time over " + std::to_string(steps) + " steps (" + device_name(device_) + ")\n" +
             profile_summary(events, steps);
  std::ofstream f(std::filesystem::path(dir_) / ("summary_" + tag + ".txt"));
  f << summary_;
  return true;
}

}  // namespace lingua
