#include "lingua/data/paths.h"

#include <filesystem>

#include "lingua/core/error.h"

namespace fs = std::filesystem;

namespace lingua {

void require_regular_file(const std::string& path, std::string_view what) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  LINGUA_CHECK(fs::exists(st), what, " ", path, " does not exist");
  LINGUA_CHECK(!fs::is_directory(st), what, " ", path, " is a directory, expected a file");
  LINGUA_CHECK(fs::is_regular_file(st), what, " ", path, " is not a regular file");
}

void require_directory(const std::string& path, std::string_view what) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  LINGUA_CHECK(fs::exists(st), what, " ", path, " does not exist");
  LINGUA_CHECK(fs::is_directory(st), what, " ", path, " is a file, expected a directory");
}

}  // namespace lingua
