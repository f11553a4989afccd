// Fuzz target: a checkpoint's params.json, read as read_params_json (lingua/checkpoint/model_io.cpp)
// reads it: strict JSON, "param_counts" dropped, then the config reader. (read_params_json itself
// needs the model library; these are its steps on the text.)
// Property of an accepted file: the params.json written for its config reads back to the same config.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "fuzz/fuzz_common.h"
#include "lingua/config/config.h"
#include "lingua/config/train_config.h"

using namespace lingua;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // read_params_json: "not valid JSON"
  if (j.is_object()) j.erase("param_counts");
  TrainConfig cfg;
  try {
    cfg = config_from_json_text<TrainConfig>(j.dump(), "params.json");
  } catch (const Error&) {
    return 0;
  }
  const std::string written = config_to_json(cfg);
  TrainConfig back = lingua_fuzz::must_succeed("params.json written by config_to_json reads back", [&] {
    return config_from_json_text<TrainConfig>(written, "params.json");
  });
  const std::string rewritten = config_to_json(back);
  FUZZ_CHECK(rewritten == written, "params.json round trip changed the config:\n", written, "---- read back as:\n",
             rewritten);
  return 0;
}
