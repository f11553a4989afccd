#include "lingua/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>

#include "lingua/checkpoint/atomic_file.h"
#include "lingua/core/error.h"

namespace lingua {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_use_rename_exchange{true};

// Temp/aside dirs of saves and prunes running in this process right now; prune must not delete them
// (a save may run on a background thread while the trainer prunes).
std::mutex g_busy_mu;
std::set<std::string> g_busy;

std::string key_of(const fs::path& p) { return fs::absolute(p).lexically_normal().string(); }

struct BusyGuard {
  std::string key;
  explicit BusyGuard(const fs::path& p) : key(key_of(p)) {
    std::lock_guard lk(g_busy_mu);
    g_busy.insert(key);
  }
  ~BusyGuard() {
    std::lock_guard lk(g_busy_mu);
    g_busy.erase(key);
  }
};

bool is_busy(const fs::path& p) {
  std::lock_guard lk(g_busy_mu);
  return g_busy.count(key_of(p)) != 0;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The step of a canonical step directory name, or nullopt.
std::optional<int64_t> parse_step_name(const std::string& name) {
  if (name.size() < 10 || !all_digits(name)) return std::nullopt;
  int64_t step = 0;
  auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), step);
  if (ec != std::errc() || p != name.data() + name.size()) return std::nullopt;
  if (checkpoint_dir_name(step) != name) return std::nullopt;  // e.g. 11 digits with a leading zero
  return step;
}

// ".tmp_<digits>_<pid>" or ".old_<digits>_<pid>": what save/prune leave behind when interrupted.
bool is_temp_name(const std::string& name) {
  if (name.rfind(".tmp_", 0) != 0 && name.rfind(".old_", 0) != 0) return false;
  std::string_view rest = std::string_view(name).substr(5);
  size_t us = rest.find('_');
  return us != std::string_view::npos && all_digits(rest.substr(0, us)) && all_digits(rest.substr(us + 1));
}

std::string pid_str() { return std::to_string(static_cast<long long>(::getpid())); }

void fsync_tree(const fs::path& dir) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_symlink()) continue;
    if (it->is_regular_file()) fsync_file(it->path().string());
    else if (it->is_directory()) fsync_dir(it->path().string());
  }
  LINGUA_CHECK(!ec, "cannot walk '", dir.string(), "' to fsync it: ", ec.message());
  fsync_dir(dir.string());
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  LINGUA_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename '", from.string(), "' to '", to.string(),
               "': ", std::strerror(errno));
}

void remove_all_or_fail(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  LINGUA_CHECK(!ec, "cannot delete '", p.string(), "': ", ec.message());
}

}  // namespace

namespace detail {
void set_checkpoint_rename_exchange_for_testing(bool enabled) { g_use_rename_exchange = enabled; }
}  // namespace detail

std::string checkpoint_dir_name(int64_t step) {
  LINGUA_CHECK(step >= 0, "checkpoint step must be >= 0, got ", step);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%010lld", static_cast<long long>(step));
  return buf;
}

bool is_complete_checkpoint(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(fs::path(dir) / kCheckpointCompleteMarker, ec);
}

std::string save_checkpoint_dir(const std::string& root, int64_t step,
                                const std::function<void(const std::string& tmp_dir)>& write_files) {
  const std::string name = checkpoint_dir_name(step);
  const fs::path root_p(root);
  std::error_code ec;
  fs::create_directories(root_p, ec);
  LINGUA_CHECK(!ec, "cannot create checkpoint root '", root, "': ", ec.message());
  LINGUA_CHECK(fs::is_directory(root_p), "checkpoint root '", root, "' is not a directory");

  const fs::path final_p = root_p / name;
  const fs::path tmp = root_p / (".tmp_" + name + "_" + pid_str());
  BusyGuard busy_tmp(tmp);
  if (fs::exists(fs::symlink_status(tmp))) remove_all_or_fail(tmp);  // left by an earlier failed save
  fs::create_directory(tmp, ec);
  LINGUA_CHECK(!ec, "cannot create '", tmp.string(), "': ", ec.message());

  try {
    write_files(tmp.string());
    LINGUA_CHECK(fs::is_directory(tmp), "checkpoint step ", step, ": the temp dir '", tmp.string(),
                 "' vanished while writing files");
    // The marker goes last: its presence means every other file is there.
    write_text_file_atomic((tmp / kCheckpointCompleteMarker).string(), "step " + std::to_string(step) + "\n");
    fsync_tree(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);  // best effort; prune also removes stale temp dirs
    throw;
  }

  if (!fs::exists(fs::symlink_status(final_p))) {
    rename_or_fail(tmp, final_p);
    fsync_dir(root);
    return final_p.string();
  }
  // Replacing an existing step directory (a re-save, or one left without its marker).
  if (g_use_rename_exchange) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_p.c_str(), RENAME_EXCHANGE) == 0) {
      // Swapped in one step: tmp now holds the old directory.
      fsync_dir(root);
      fs::remove_all(tmp, ec);  // failures leave a stale temp dir that prune removes later
      return final_p.string();
    }
    LINGUA_CHECK(errno == EINVAL || errno == ENOSYS || errno == ENOTSUP, "cannot replace '", final_p.string(),
                 "' with '", tmp.string(), "': ", std::strerror(errno));
  }
  // No atomic exchange on this filesystem: between these two renames the step is briefly absent,
  // but the older checkpoints are untouched.
  const fs::path old = root_p / (".old_" + name + "_" + pid_str());
  BusyGuard busy_old(old);
  if (fs::exists(fs::symlink_status(old))) remove_all_or_fail(old);
  rename_or_fail(final_p, old);
  rename_or_fail(tmp, final_p);
  fsync_dir(root);
  fs::remove_all(old, ec);
  return final_p.string();
}

std::vector<CheckpointEntry> list_checkpoints(const std::string& root) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!fs::exists(root, ec)) return out;
  LINGUA_CHECK(fs::is_directory(root, ec), "checkpoint root '", root, "' is not a directory");
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::optional<int64_t> step = parse_step_name(it->path().filename().string());
    if (step && is_complete_checkpoint(it->path().string())) out.push_back({*step, it->path().string()});
  }
  LINGUA_CHECK(!ec, "cannot list checkpoint root '", root, "': ", ec.message());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointEntry> latest_checkpoint(const std::string& root) {
  std::vector<CheckpointEntry> all = list_checkpoints(root);
  if (all.empty()) return std::nullopt;
  return all.back();
}

void prune_checkpoints(const std::string& root, int keep) {
  std::error_code ec;
  if (!fs::exists(root, ec)) return;
  LINGUA_CHECK(fs::is_directory(root, ec), "checkpoint root '", root, "' is not a directory");

  std::vector<fs::path> stale;
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    if (is_temp_name(it->path().filename().string()) && !is_busy(it->path())) stale.push_back(it->path());
  LINGUA_CHECK(!ec, "cannot list checkpoint root '", root, "': ", ec.message());
  for (const fs::path& p : stale) remove_all_or_fail(p);

  if (keep <= 0) return;
  std::vector<CheckpointEntry> all = list_checkpoints(root);
  if (all.size() <= static_cast<size_t>(keep)) return;
  // Rename aside first (atomic: the checkpoint disappears from listings at once), then delete.
  std::vector<fs::path> doomed;
  std::vector<std::unique_ptr<BusyGuard>> guards;
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    fs::path aside = fs::path(root) / (".old_" + checkpoint_dir_name(all[i].step) + "_" + pid_str());
    guards.push_back(std::make_unique<BusyGuard>(aside));
    if (fs::exists(fs::symlink_status(aside))) remove_all_or_fail(aside);
    rename_or_fail(all[i].path, aside);
    doomed.push_back(aside);
  }
  fsync_dir(root);
  for (const fs::path& p : doomed) remove_all_or_fail(p);
}

std::string set_aside_corrupt_checkpoint(const std::string& dir) {
  fs::path from = fs::path(dir).lexically_normal();
  if (from.filename().empty()) from = from.parent_path();  // "dir/"
  fs::path to = from.string() + ".corrupt";
  for (int i = 1; fs::exists(fs::symlink_status(to)); ++i) to = from.string() + ".corrupt." + std::to_string(i);
  rename_or_fail(from, to);
  fsync_dir(from.parent_path().empty() ? "." : from.parent_path().string());
  return to.string();
}

void write_text_file_atomic(const std::string& path, const std::string& content) {
  AtomicFileWriter w(path);
  w.write(content.data(), content.size());
  w.commit();
}

std::string read_text_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LINGUA_CHECK(fd >= 0, "cannot read '", path, "': ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  LINGUA_CHECK(::fstat(fd, &st) == 0, "cannot stat '", path, "': ", std::strerror(errno));
  LINGUA_CHECK(S_ISREG(st.st_mode), "cannot read '", path, "': not a regular file");
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    LINGUA_CHECK(r >= 0, "error reading '", path, "': ", std::strerror(errno));
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

}  // namespace lingua
