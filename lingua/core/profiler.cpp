#include "lingua/core/profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "lingua/core/cuda.h"
#include "lingua/core/error.h"

namespace lingua {

namespace {
double host_us() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Profiler& Profiler::instance() {
  static Profiler p;
  return p;
}

void Profiler::start(Device device) {
  LINGUA_CHECK(!active_, "internal error: the profiler is already recording");
  device_ = device;
  stack_.clear();
  open_.clear();
  records_.clear();
  events_used_ = 0;
  active_ = true;
}

void* Profiler::next_event() {
  if (events_used_ == event_pool_.size()) event_pool_.push_back(cuda_event_create());
  return event_pool_[events_used_++];
}

void Profiler::push(const std::string& name) {
  Record r;
  r.name = name;
  r.depth = (int)stack_.size();
  for (const auto& s : stack_) r.path += s + "/";
  r.path += name;
  if (!open_.empty()) records_[open_.back()].leaf = false;
  if (device_ == Device::cuda) {
    cuda_range_push(name.c_str());
    r.ev_start = next_event();
    cuda_event_record(r.ev_start);
  } else {
    r.host_start = host_us();
  }
  stack_.push_back(name);
  open_.push_back(records_.size());
  records_.push_back(std::move(r));
}

void Profiler::pop() {
  LINGUA_CHECK(!open_.empty(), "internal error: profiler scope closed twice");
  Record& r = records_[open_.back()];
  if (device_ == Device::cuda) {
    r.ev_end = next_event();
    cuda_event_record(r.ev_end);
    cuda_range_pop();
  } else {
    r.host_end = host_us();
  }
  open_.pop_back();
  stack_.pop_back();
}

std::vector<ProfileEvent> Profiler::stop() {
  LINGUA_CHECK(active_, "internal error: the profiler is not recording");
  LINGUA_CHECK(open_.empty(), "internal error: profiler stopped inside scope ", stack_.back());
  active_ = false;
  if (device_ == Device::cuda) cuda_synchronize();
  std::vector<ProfileEvent> out;
  out.reserve(records_.size());
  for (const Record& r : records_) {
    ProfileEvent e;
    e.name = r.name;
    e.path = r.path;
    e.depth = r.depth;
    e.leaf = r.leaf;
    if (device_ == Device::cuda) {
      e.start_us = 1e3 * cuda_event_elapsed_ms(records_.front().ev_start, r.ev_start);
      e.dur_us = 1e3 * cuda_event_elapsed_ms(r.ev_start, r.ev_end);
    } else {
      e.start_us = r.host_start - records_.front().host_start;
      e.dur_us = r.host_end - r.host_start;
    }
    out.push_back(std::move(e));
  }
  records_.clear();
  return out;
}

void write_chrome_trace(const std::string& path, const std::vector<ProfileEvent>& events) {
  nlohmann::json trace = nlohmann::json::array();
  for (const auto& e : events)
    trace.push_back({{"name", e.name}, {"cat", e.leaf ? "op" : "module"}, {"ph", "X"}, {"ts", e.start_us},
                     {"dur", e.dur_us}, {"pid", 0}, {"tid", 0}, {"args", {{"path", e.path}}}});
  nlohmann::json doc = {{"traceEvents", trace}, {"displayTimeUnit", "ms"}};
  namespace fs = std::filesystem;
  fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  fs::path tmp = p;
  tmp += ".tmp";
  {
    std::ofstream f(tmp);
    LINGUA_CHECK(f.good(), "cannot write the profile trace ", tmp.string());
    f << doc.dump() << "\n";
    LINGUA_CHECK(f.good(), "error writing the profile trace ", tmp.string());
  }
  fs::rename(tmp, p);
}

std::string profile_summary(const std::vector<ProfileEvent>& events, int steps) {
  static const std::regex layer_no(R"(\.\d+(/|$))");
  struct Row {
    double us = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Row> rows;
  double ops_us = 0, top_us = 0;
  for (const auto& e : events) {
    if (e.depth == 0) top_us += e.dur_us;
    if (!e.leaf) continue;
    Row& r = rows[std::regex_replace(e.path, layer_no, ".N$1")];
    r.us += e.dur_us;
    r.calls += 1;
    ops_us += e.dur_us;
  }
  std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.second.us > b.second.us; });
  const double per = 1e-3 / std::max(steps, 1);
  std::ostringstream s;
  char line[512];
  std::snprintf(line, sizeof line, "%-64s %8s %10s %7s\n", "op (path)", "calls", "ms/step", "share");
  s << line;
  for (auto& [name, r] : sorted) {
    std::snprintf(line, sizeof line, "%-64s %8lld %10.3f %6.1f%%\n", name.c_str(), (long long)(r.calls / std::max(steps, 1)),
                  r.us * per, 100.0 * r.us / std::max(top_us, 1e-9));
    s << line;
  }
  std::snprintf(line, sizeof line, "%-64s %8s %10.3f %6.1f%%\n", "(not in any op: gaps, host work)", "",
                (top_us - ops_us) * per, 100.0 * (top_us - ops_us) / std::max(top_us, 1e-9));
  s << line;
  std::snprintf(line, sizeof line, "%-64s %8s %10.3f\n", "total (outermost scopes)", "", top_us * per);
  s << line;
  return s.str();
}

}  // namespace lingua
