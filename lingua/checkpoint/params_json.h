#pragma once
// Reading a checkpoint's params.json (written by params_json(), model_io.h): kept apart from the
// model code so the reader can be tested and fuzzed on its own.
#include <string>

#include "lingua/config/train_config.h"

namespace lingua {

// The training config of a params.json's text: strict JSON, read with the config reader (unknown
// keys and wrong types are errors with the line), its "param_counts" skipped (the loaded model
// recounts), then checked by validate_config as `lingua train` checks a config. Errors name `origin`.
TrainConfig parse_params_json(const std::string& text, const std::string& origin);

}  // namespace lingua
