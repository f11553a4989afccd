#pragma once
// Shared by the fuzz targets (fuzz/fuzz_*.cpp, one reader each; README "Fuzzing").
//
// The contract a target checks: a reader either returns a result or throws lingua::Error (a clean
// rejection naming the problem). Any other exception (std::out_of_range, a nlohmann or YAML
// exception, std::bad_alloc) escapes LLVMFuzzerTestOneInput and aborts, so libFuzzer reports it
// with the input; so do sanitizer reports, hangs (-timeout) and memory blow-ups (-rss_limit_mb).
// FUZZ_CHECK states properties of accepted inputs (round trips, ranges) and aborts when one fails.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "lingua/core/error.h"

namespace lingua_fuzz {

// A directory of this process for the files a target writes (removed at exit). /dev/shm when
// writable: targets write a file per input.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path base = access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("lingua_fuzz_" + std::to_string(getpid()));
    fs::create_directories(d, ec);
    if (ec) {
      std::fprintf(stderr, "fuzz: cannot create %s: %s\n", d.c_str(), ec.message().c_str());
      std::abort();
    }
    static const std::string removed_at_exit = d.string();
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(removed_at_exit, ignored);
    });
    return d.string();
  }();
  return dir;
}

inline std::string scratch_path(const std::string& name) { return scratch_dir() + "/" + name; }

inline void write_file(const std::string& path, std::string_view data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// Bytes outside printable ASCII as \xNN, so a message shows NULs and invalid UTF-8.
inline std::string escaped(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return out;
}

[[noreturn]] inline void property_failed(const char* cond, const char* file, int line, const std::string& detail) {
  std::fprintf(stderr, "\nfuzz property failed at %s:%d: %s\n  %s\n", file, line, cond, escaped(detail).c_str());
  std::abort();
}

// Runs f, which must not throw: a lingua::Error here is a bug (e.g. our own output not reading back).
template <class F>
auto must_succeed(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const lingua::Error& e) {
    property_failed(what, __FILE__, __LINE__, std::string("lingua::Error: ") + e.what());
  }
}

}  // namespace lingua_fuzz

#define FUZZ_CHECK(cond, ...)                                                                        \
  do {                                                                                               \
    if (!(cond)) ::lingua_fuzz::property_failed(#cond, __FILE__, __LINE__, ::lingua::detail::concat(__VA_ARGS__)); \
  } while (0)
