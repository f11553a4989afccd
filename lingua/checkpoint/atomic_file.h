#pragma once
// Crash-safe file writing. A reader (or a restarted run) sees either the previous content of a
// file or the complete new one, never a torn write: data goes to `path + ".tmp"`, is fsynced,
// renamed over `path`, and the parent directory is fsynced so the rename itself is durable.
#include <cstddef>
#include <string>

namespace lingua {

class AtomicFileWriter {
 public:
  // Creates (truncates) `path + ".tmp"`. Fails naming the file if it cannot be created.
  explicit AtomicFileWriter(std::string path);
  // If commit() was not reached (an exception on the way), the temp file is removed.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends n bytes (handles short writes and EINTR).
  void write(const void* data, size_t n);
  // fsync, close, rename over the target, fsync the parent directory.
  void commit();

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// fsync a regular file / a directory by path; fail naming the path on error.
void fsync_file(const std::string& path);
void fsync_dir(const std::string& dir);

}  // namespace lingua
