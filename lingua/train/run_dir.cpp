#include "lingua/train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/core/error.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

// "model.dim" -> "512" for every leaf of a config (mappings flattened, lists as flow YAML).
void flatten(const YAML::Node& n, const std::string& path, std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (auto it = n.begin(); it != n.end(); ++it)
      flatten(it->second, path.empty() ? it->first.Scalar() : path + "." + it->first.Scalar(), out);
    return;
  }
  // Lists (and any value) compared as compact JSON: the same value read from config.yaml and from
  // params.json (sorted keys, flow or block style) gives the same text.
  out[path] = n.IsScalar() ? n.Scalar() : nlohmann::json::parse(yaml_to_json_text(n)).dump();
}

std::map<std::string, std::string> flat_config(const TrainConfig& c) {
  std::map<std::string, std::string> out;
  flatten(config_detail::Writer::write(c), "", out);
  return out;
}

// Keys whose change makes a checkpoint another model's.
bool model_key(const std::string& k) {
  return k.rfind("model.", 0) == 0 || k.rfind("data.tokenizer.", 0) == 0 || k.rfind("growth.", 0) == 0;
}

// Creates a directory (and its parents), failing with the path and the reason.
void make_dir(const std::string& dir, const char* what) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    fail(what, " '", dir, "' exists and is not a directory");
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create ", what, " '", dir, "': ", ec.message());
  // Writable? (a read-only directory fails here, not at the first checkpoint hours later)
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    fail("cannot write in ", what, " '", dir, "': ", std::strerror(errno));
}

// Keeps the lines of `path` whose global_step is <= step (and lines that are not metrics);
// rewrites the file atomically when something is dropped. Returns the number dropped.
int64_t truncate_jsonl(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return 0;
  std::ifstream f(path);
  std::string line, kept;
  int64_t dropped = 0;
  while (std::getline(f, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("global_step") && j["global_step"].is_number_integer() &&
        j["global_step"].get<int64_t>() > step) {
      ++dropped;
      continue;
    }
    kept += line + "\n";
  }
  if (dropped) write_text_file_atomic(path, kept);
  return dropped;
}

// Two leaves' texts name the same value: equal, or the same number written two ways (a free-form
// key such as growth.source keeps its YAML text, "2.0e-5", which params.json writes as 2e-05).
bool same_value(const std::string& a, const std::string& b) {
  if (a == b) return true;
  auto number = [](const std::string& s, double* v) {
    if (s.empty()) return false;
    char* end = nullptr;
    *v = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size();
  };
  double x, y;
  return number(a, &x) && number(b, &y) && x == y;
}

}  // namespace

ConfigDiff diff_configs(const TrainConfig& old_cfg, const TrainConfig& new_cfg) {
  const auto a = flat_config(old_cfg), b = flat_config(new_cfg);
  std::map<std::string, std::pair<std::string, std::string>> changed;
  for (auto& [k, v] : a) {
    auto it = b.find(k);
    const std::string nv = it == b.end() ? "(unset)" : it->second;
    if (!same_value(v, nv)) changed[k] = {v, nv};
  }
  for (auto& [k, v] : b)
    if (!a.count(k)) changed[k] = {"(unset)", v};
  ConfigDiff d;
  for (auto& [k, ov] : changed) {
    // Not part of the run: where it is written, its name, and the benchmark settings.
    if (k == "dump_dir" || k == "name" || k.rfind("bench.", 0) == 0) continue;
    (model_key(k) ? d.refused : d.allowed).push_back(k + ": " + ov.first + " -> " + ov.second);
  }
  return d;
}

RunDir::RunDir(const TrainConfig& cfg, const std::string& checkpoint_root) : dir_(cfg.dump_dir) {
  make_dir(dir_, "dump_dir");
  const std::string lock = (fs::path(dir_) / ".lock").string();
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) fail("cannot create the lock file '", lock, "' in dump_dir: ", std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK)
      fail("dump_dir '", dir_, "' is in use by another lingua process (pid ", n > 0 ? std::string(pid, n) : "unknown",
           ", lock file ", lock, "): wait for it to end, or give this run another dump_dir");
    fail("cannot lock '", lock, "': ", std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != (ssize_t)pid.size())
    fail("cannot write the lock file '", lock, "': ", std::strerror(errno));
  make_dir(checkpoint_root, "checkpoint directory");
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the flock
}

std::vector<std::string> RunDir::check_resume(const std::string& dir, const TrainConfig& cfg) const {
  TrainConfig old_cfg;
  try {
    old_cfg = read_params_json((fs::path(dir) / CheckpointFiles::params).string());
  } catch (const Error&) {
    return {};  // the checkpoint loader reports (or skips) a broken checkpoint
  }
  ConfigDiff d = diff_configs(old_cfg, cfg);
  if (!d.refused.empty()) {
    std::string keys;
    for (auto& k : d.refused) keys += "\n  " + k;
    fail("dump_dir '", dir_, "' holds the checkpoints of another model (", dir,
         "); these keys differ from its params.json:", keys,
         "\nUse another dump_dir for a new model, or set these keys back to resume that run.");
  }
  return d.allowed;
}

void RunDir::write_config(const TrainConfig& cfg) const {
  write_text_file_atomic((fs::path(dir_) / "config.yaml").string(), config_to_yaml(cfg));
}

int64_t RunDir::truncate_metrics(int64_t step) const {
  return truncate_jsonl(metrics_path(), step) + truncate_jsonl(eval_metrics_path(), step);
}

std::string RunDir::metrics_path() const { return (fs::path(dir_) / "metrics.jsonl").string(); }
std::string RunDir::eval_metrics_path() const { return (fs::path(dir_) / "metrics.eval.jsonl").string(); }

}  // namespace lingua
