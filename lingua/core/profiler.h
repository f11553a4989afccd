#pragma once
// Profiler: named, nested scopes timed on the device's own clock (CUDA events on the stream) or
// the host clock (CPU), recorded between start() and stop() only, for a few steps at a time.
// The result is a Chrome trace (chrome://tracing, ui.perfetto.dev) and a per-op summary table.
// While inactive a scope costs one branch. On CUDA every scope is also an NVTX range.
//
//   LINGUA_PROFILE_SCOPE("linear_forward");          // an op (the leaves of the tree)
//   ProfileScope layer(profiling ? "layers." + std::to_string(i) : std::string());  // a module
#include <cstdint>
#include <string>
#include <vector>

#include "lingua/core/tensor.h"

namespace lingua {

struct ProfileEvent {
  std::string name;   // the scope's own name ("linear_forward")
  std::string path;   // names from the outermost scope, '/'-separated ("step/layers.3/attention/linear_forward")
  int depth = 0;
  bool leaf = true;   // no scope inside it
  double start_us = 0, dur_us = 0;  // from the first scope of the recording
};

class Profiler {
 public:
  static Profiler& instance();
  // Starts recording scopes opened on this thread, timed on `device`.
  void start(Device device);
  // Ends the recording (waits for the device) and returns the scopes in opening order.
  std::vector<ProfileEvent> stop();
  bool active() const { return active_; }
  void push(const std::string& name);
  void pop();

 private:
  bool active_ = false;
  Device device_ = Device::cpu;
  std::vector<std::string> stack_;
  std::vector<size_t> open_;       // indices into records_ of the open scopes
  struct Record {
    std::string name, path;
    int depth;
    bool leaf = true;
    void* ev_start = nullptr;
    void* ev_end = nullptr;
    double host_start = 0, host_end = 0;
  };
  std::vector<Record> records_;
  std::vector<void*> event_pool_;  // CUDA events, reused across recordings
  size_t events_used_ = 0;
  void* next_event();
};

class ProfileScope {
 public:
  explicit ProfileScope(const char* name) : on_(Profiler::instance().active()) {
    if (on_) Profiler::instance().push(name);
  }
  explicit ProfileScope(const std::string& name) : on_(Profiler::instance().active() && !name.empty()) {
    if (on_) Profiler::instance().push(name);
  }
  ~ProfileScope() {
    if (on_) Profiler::instance().pop();
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  bool on_;
};

#define LINGUA_PROFILE_CAT2(a, b) a##b
#define LINGUA_PROFILE_CAT(a, b) LINGUA_PROFILE_CAT2(a, b)
#define LINGUA_PROFILE_SCOPE(name) ::lingua::ProfileScope LINGUA_PROFILE_CAT(profile_scope_, __LINE__)(name)

// True while recording: callers build dynamic scope names only then.
inline bool profiling_active() { return Profiler::instance().active(); }

// Chrome trace event format ("X" complete events, microseconds); written atomically.
void write_chrome_trace(const std::string& path, const std::vector<ProfileEvent>& events);

// Time per op summed over the recording: leaves grouped by their path with layer numbers removed
// ("step/layers.N/attention/linear_forward"), sorted by time, with calls, ms per step and share
// of the step; then the step time not covered by any op (launch gaps, host work).
std::string profile_summary(const std::vector<ProfileEvent>& events, int steps);

}  // namespace lingua
