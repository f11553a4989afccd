// Fuzz target: a training config as `lingua train` reads it, a YAML file plus dot-list overrides.
// Input: the YAML file, then optionally a line "#overrides" followed by one `key=value` argument per
// line (`config=` lines are dropped: they would name other files).
// Properties of a config accepted and validated (validate_config): the config.yaml and params.json
// written for it read back to the same config.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "lingua/checkpoint/params_json.h"
#include "lingua/config/config.h"
#include "lingua/config/train_config.h"
#include "lingua/config/validate.h"

using namespace lingua;
using lingua_fuzz::must_succeed;

namespace {

constexpr std::string_view kSeparator = "#overrides";

void split_input(const std::string& input, std::string* yaml, std::vector<std::string>* overrides) {
  size_t sep = input.rfind(kSeparator, 0) == 0 ? 0 : input.find("\n" + std::string(kSeparator));
  if (sep == std::string::npos) {
    *yaml = input;
    return;
  }
  *yaml = input.substr(0, sep);
  size_t pos = input.find('\n', sep + (sep == 0 ? 0 : 1));
  while (pos != std::string::npos) {
    size_t next = input.find('\n', pos + 1);
    std::string line = input.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    if (line.rfind("config=", 0) != 0) overrides->push_back(line);
    pos = next;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string yaml;
  std::vector<std::string> args;
  split_input(input, &yaml, &args);
  const std::string file = lingua_fuzz::scratch_path("config.yaml");
  lingua_fuzz::write_file(file, yaml);
  args.insert(args.begin(), "config=" + file);

  TrainConfig cfg;
  try {  // as `lingua train` and its trainer check a config before anything is allocated
    cfg = parse_config<TrainConfig>(args);
    config_notes(cfg);
    validate_config(cfg);
    check_training_memory(cfg);
  } catch (const Error&) {
    return 0;  // a clean rejection
  }

  // The dump_dir's config.yaml.
  const std::string written = config_to_yaml(cfg);
  const std::string file2 = lingua_fuzz::scratch_path("written.yaml");
  lingua_fuzz::write_file(file2, written);
  TrainConfig back = must_succeed("config.yaml written by config_to_yaml reads back",
                                  [&] { return parse_config<TrainConfig>({"config=" + file2}); });
  const std::string rewritten = config_to_yaml(back);
  FUZZ_CHECK(rewritten == written, "config.yaml round trip changed the config:\n", written, "---- read back as:\n",
             rewritten);

  // The checkpoint's params.json.
  const std::string json = config_to_json(cfg);
  TrainConfig from_json = must_succeed("params.json written by config_to_json reads back",
                                       [&] { return parse_params_json(json, "params.json"); });
  const std::string from_json_yaml = config_to_yaml(from_json);
  FUZZ_CHECK(from_json_yaml == written, "params.json round trip changed the config:\n", json, "---- read back as:\n",
             from_json_yaml);
  return 0;
}
