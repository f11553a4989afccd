#pragma once
// Checks of paths the user gives (input files, corpus directories) whose errors say what is wrong:
// missing, a directory where a file is expected, or a file where a directory is expected.
#include <string>
#include <string_view>

namespace lingua {

// Fails with "<what> <path> does not exist" / "... is a directory, expected a file" / "... is not
// a regular file" unless path is a regular file (or a link to one).
void require_regular_file(const std::string& path, std::string_view what);
// Fails with "<what> <path> does not exist" / "... is a file, expected a directory" unless path is
// a directory (or a link to one).
void require_directory(const std::string& path, std::string_view what);

}  // namespace lingua
