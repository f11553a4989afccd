#include "lingua/checkpoint/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "lingua/core/error.h"

namespace lingua {

namespace {

std::string errno_str() { return std::strerror(errno); }

void fsync_path(const std::string& path, int flags, const char* what) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  LINGUA_CHECK(fd >= 0, "cannot open ", what, " '", path, "' to fsync it: ", errno_str());
  int rc;
  do rc = ::fsync(fd);
  while (rc != 0 && errno == EINTR);
  int saved = errno;
  ::close(fd);
  LINGUA_CHECK(rc == 0, "fsync of ", what, " '", path, "' failed: ", std::strerror(saved));
}

std::string parent_dir(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

}  // namespace

void fsync_file(const std::string& path) { fsync_path(path, O_RDONLY, "file"); }
void fsync_dir(const std::string& dir) { fsync_path(dir, O_RDONLY | O_DIRECTORY, "directory"); }

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LINGUA_CHECK(fd_ >= 0, "cannot create '", tmp_, "' (to write '", path_, "'): ", errno_str());
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  LINGUA_CHECK(fd_ >= 0 && !committed_, "write to '", path_, "' after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    LINGUA_CHECK(w > 0, "write to '", tmp_, "' failed: ", w < 0 ? errno_str() : std::string("no progress"));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFileWriter::commit() {
  LINGUA_CHECK(fd_ >= 0 && !committed_, "'", path_, "' committed twice");
  int rc;
  do rc = ::fsync(fd_);
  while (rc != 0 && errno == EINTR);
  LINGUA_CHECK(rc == 0, "fsync of '", tmp_, "' failed: ", errno_str());
  rc = ::close(fd_);
  fd_ = -1;
  LINGUA_CHECK(rc == 0, "close of '", tmp_, "' failed: ", errno_str());
  LINGUA_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "cannot rename '", tmp_, "' to '", path_,
               "': ", errno_str());
  committed_ = true;
  fsync_dir(parent_dir(path_));
}

}  // namespace lingua
