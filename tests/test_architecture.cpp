// The architecture's rules, checked on the sources (README, "Architecture"):
//  - an FFN variant is named only in its own files: STEM in lingua/model/ffn/stem*, its registry
//    line, its command (apps/stem_edit.cpp and its registration) and its config keys;
//  - dependencies point one way: core <- ops <- model <- exec, optim <- checkpoint, generate <-
//    eval (task evaluation generates), train <- apps (a lower layer never includes a higher one);
//  - no library source file is over 600 lines.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = LINGUA_SOURCE_DIR;

// Library and app sources, tests excluded (relative paths).
std::vector<std::string> sources() {
  std::vector<std::string> out;
  for (const char* dir : {"lingua", "apps"})
    for (auto& e : fs::recursive_directory_iterator(kRoot / dir)) {
      if (!e.is_regular_file()) continue;
      const std::string name = e.path().filename().string(), ext = e.path().extension().string();
      if (name.rfind("test", 0) == 0 || name == "testing.h" || name == "testing_cuda.h" || name == "backend_test.h")
        continue;
      if (ext == ".h" || ext == ".cpp" || ext == ".cu" || ext == ".cuh") out.push_back(fs::relative(e.path(), kRoot).string());
    }
  return out;
}

std::vector<std::string> lines_of(const std::string& rel) {
  std::ifstream f(kRoot / rel);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) lines.push_back(line);
  return lines;
}

// The layer of a source: lingua/<component>/... or apps.
std::string component(const std::string& rel) {
  if (rel.rfind("apps/", 0) == 0) return "apps";
  const size_t a = rel.find('/'), b = rel.find('/', a + 1);
  return rel.substr(a + 1, b - a - 1);
}

}  // namespace

TEST(Architecture, StemIsNamedOnlyInItsOwnFiles) {
  const std::set<std::string> allowed = {
      "lingua/model/ffn/stem.h",      "lingua/model/ffn/stem.cpp",  "lingua/model/ffn/stem_edit.h",
      "lingua/model/ffn/stem_edit.cpp", "lingua/model/ffn/registry.cpp",  // the variant and its registry line
      "lingua/config/train_config.h",                                     // its config keys
      "apps/stem_edit.cpp",           "apps/main.cpp",              "apps/commands.h"};  // its command
  const std::regex stem("(^|[^a-z])stem([^a-z]|$)|stem_|_stem", std::regex::icase);
  std::vector<std::string> found;
  int scanned = 0;
  for (const std::string& rel : sources()) {
    ++scanned;
    if (allowed.count(rel)) continue;
    const std::vector<std::string> lines = lines_of(rel);
    for (size_t i = 0; i < lines.size(); ++i)
      // Lingua's config key distributed.stem_parallel_size may be named where it is read.
      if (std::regex_search(std::regex_replace(lines[i], std::regex("stem_parallel_size"), ""), stem)) found.push_back(rel + ":" + std::to_string(i + 1) + ": " + lines[i]);
  }
  EXPECT_GT(scanned, 100);
  EXPECT_TRUE(found.empty()) << "STEM named outside its own files:\n" << [&] {
    std::string s;
    for (auto& f : found) s += f + "\n";
    return s;
  }();
  // The check can fail: the variant's own file does name it.
  bool in_variant = false;
  for (const std::string& line : lines_of("lingua/model/ffn/stem.cpp")) in_variant |= std::regex_search(line, stem);
  EXPECT_TRUE(in_variant);
}

TEST(Architecture, DependenciesPointOneWay) {
  // What each layer may include (besides itself); checkpoint loads models, so it sits above exec.
  const std::map<std::string, std::set<std::string>> may = {
      {"core", {}},
      {"ops", {"core"}},
      {"config", {"core"}},
      {"data", {"core", "config"}},
      {"model", {"core", "ops", "config"}},
      {"exec", {"core", "ops", "config", "model"}},
      {"optim", {"core", "ops", "config", "model"}},
      {"dist", {"core", "ops", "config", "model", "exec", "optim"}},
      {"checkpoint", {"core", "ops", "config", "data", "model", "exec", "optim"}},
      {"eval", {"core", "ops", "config", "data", "model", "exec", "generate"}},
      {"generate", {"core", "ops", "config", "data", "model", "exec"}},
      {"train", {"core", "ops", "config", "data", "model", "exec", "optim", "checkpoint", "eval", "dist"}},
      {"apps", {"core", "ops", "config", "data", "model", "exec", "optim", "checkpoint", "eval", "generate", "train", "dist"}},
  };
  const std::regex include("#include \"lingua/([a-z_]+)/");
  std::vector<std::string> bad;
  for (const std::string& rel : sources()) {
    const std::string from = component(rel);
    ASSERT_TRUE(may.count(from)) << "unknown layer " << from << " (" << rel << "): add it to this test and the README";
    for (const std::string& line : lines_of(rel)) {
      std::smatch m;
      if (!std::regex_search(line, m, include)) continue;
      const std::string to = m[1];
      if (to != from && !may.at(from).count(to)) bad.push_back(rel + " includes lingua/" + to);
    }
  }
  EXPECT_TRUE(bad.empty()) << [&] {
    std::string s;
    for (auto& b : bad) s += b + "\n";
    return s;
  }();
}

TEST(Architecture, NoLibrarySourceOver600Lines) {
  for (const std::string& rel : sources()) EXPECT_LE(lines_of(rel).size(), 600u) << rel;
}
