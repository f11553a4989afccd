#pragma once
// Checkpoint directories: <root>/{step:010d}/ holds whatever files the trainer writes for that step
// (safetensors shards, params.json, train_state_{rank:05d}.json, ...) plus a marker file "complete".
// A step directory without the marker is ignored, so a crash at any point while saving leaves the
// previous checkpoints as the latest usable ones.
//
// A step directory that failed to load when training resumed is renamed to {step:010d}.corrupt
// (.corrupt.1, ... when taken): out of the listings, so that it neither shadows the checkpoints
// written after it nor makes prune_checkpoints delete them, and never deleted automatically.
//
// One process writes a given root at a time (in Lingua, the trainer's rank 0 commits the step).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace lingua {

// Name of the marker file written last into a step directory.
inline constexpr const char* kCheckpointCompleteMarker = "complete";

struct CheckpointEntry {
  int64_t step = 0;
  std::string path;  // <root>/{step:010d}
};

// "0000000042" for step 42 (wider for steps >= 10^10).
std::string checkpoint_dir_name(int64_t step);

// Writes a step directory atomically. `write_files` writes the files into a temporary directory
// <root>/.tmp_{step:010d}_<pid>; then the marker is written, everything is fsynced, and the temp dir
// is renamed to <root>/{step:010d}. An existing directory for the same step (complete or not) is
// replaced: swapped atomically with renameat2(RENAME_EXCHANGE) where the filesystem supports it,
// otherwise renamed aside, the new one renamed in, then the old one deleted. If `write_files`
// throws, the temp dir is removed and the exception propagates unchanged. Creates root if needed.
// Returns the final directory path.
std::string save_checkpoint_dir(const std::string& root, int64_t step,
                                const std::function<void(const std::string& tmp_dir)>& write_files);

// Complete step directories (canonical {step:010d} name and the marker present), sorted by step
// ascending. Temp dirs and step dirs without the marker are ignored. A missing root gives {}.
std::vector<CheckpointEntry> list_checkpoints(const std::string& root);
std::optional<CheckpointEntry> latest_checkpoint(const std::string& root);

// Deletes the oldest complete checkpoints so that `keep` remain (keep <= 0: keep all), and removes
// stale temp dirs left by crashed saves (.tmp_* / .old_* not being written by this process right
// now). A checkpoint is first renamed aside and then deleted, so an interrupted prune never leaves a
// half-deleted directory that still looks complete. Incomplete step dirs are left alone.
void prune_checkpoints(const std::string& root, int keep);

// Renames the step directory `dir` to `dir`.corrupt (or .corrupt.N, the first free one) and returns
// the new path; fails naming both paths if the rename fails.
std::string set_aside_corrupt_checkpoint(const std::string& dir);

// True if `dir` is a directory containing the marker file.
bool is_complete_checkpoint(const std::string& dir);

// Writes a whole file atomically (path + ".tmp", fsync, rename, fsync of the parent directory).
void write_text_file_atomic(const std::string& path, const std::string& content);
// Reads a whole file; fails naming the file when it is missing or unreadable.
std::string read_text_file(const std::string& path);

namespace detail {
// Tests only: force the rename-aside path used on filesystems without RENAME_EXCHANGE.
void set_checkpoint_rename_exchange_for_testing(bool enabled);
}  // namespace detail

}  // namespace lingua
