// Fuzz target: a checkpoint's params.json, as load_model reads it (parse_params_json: strict JSON,
// the config reader, validate_config).
// Property of an accepted file: the params.json written for its config reads back to the same config.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.h"
#include "lingua/checkpoint/params_json.h"
#include "lingua/config/config.h"
#include "lingua/config/train_config.h"

using namespace lingua;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  TrainConfig cfg;
  try {
    cfg = parse_params_json(text, "params.json");
  } catch (const Error&) {
    return 0;
  }
  const std::string written = config_to_json(cfg);
  TrainConfig back = lingua_fuzz::must_succeed("params.json written by config_to_json reads back",
                                               [&] { return parse_params_json(written, "params.json"); });
  const std::string rewritten = config_to_json(back);
  FUZZ_CHECK(rewritten == written, "params.json round trip changed the config:\n", written, "---- read back as:\n",
             rewritten);
  return 0;
}
