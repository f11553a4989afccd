#include "lingua/checkpoint/params_json.h"

#include <nlohmann/json.hpp>

#include "lingua/config/config.h"
#include "lingua/config/validate.h"

namespace lingua {

TrainConfig parse_params_json(const std::string& text, const std::string& origin) {
  try {
    const nlohmann::json parsed = nlohmann::json::parse(text);  // for its error message
    (void)parsed;
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": not valid JSON: ", e.what());
  }
  YAML::Node root;  // JSON is YAML: read with the config reader, lines kept
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(origin, ":", e.mark.line + 1, ": cannot be read as a config: ", e.msg);
  }
  if (root.IsMap()) root.remove("param_counts");
  config_detail::Origins origins;
  origins.file = origin;
  TrainConfig cfg = config_detail::read_config(root, origins, TrainConfig{});
  // Validated like a config given to `lingua train` (a hand-edited or foreign params.json).
  try {
    validate_config(cfg);
  } catch (const Error& e) {
    fail(origin, ": ", e.what());
  }
  return cfg;
}

}  // namespace lingua
