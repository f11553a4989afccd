#include "lingua/config/harness.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "lingua/config/train_config.h"
#include "lingua/core/error.h"

namespace lingua {

namespace {

// The request type of a task file from its first example's fields (multiple_choice when unknown).
std::string type_of_file(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.contains("choices")) return "multiple_choice";
    if (j.contains("answer")) return "generate_until";
    if (j.contains("text")) return "loglikelihood_rolling";
    break;
  }
  return "multiple_choice";
}

}  // namespace

std::vector<TaskConfig> harness_tasks(const AnyValue& harness, const std::string& task_dir,
                                      std::vector<std::string>* missing) {
  std::vector<TaskConfig> tasks;
  if (harness.yaml.empty()) return tasks;
  YAML::Node h;
  try {
    h = YAML::Load(harness.yaml);
  } catch (const YAML::Exception& e) {
    fail("config key 'eval.harness': not YAML: ", e.what());
  }
  if (!h.IsMap() || !h["tasks"]) return tasks;
  LINGUA_CHECK(h["tasks"].IsSequence(), "config key 'eval.harness.tasks' must be a list of task names or maps");
  const int fewshot = h["num_fewshot"] && !h["num_fewshot"].IsNull() ? h["num_fewshot"].as<int>() : 0;
  const int64_t limit = h["limit"] && !h["limit"].IsNull() ? (int64_t)h["limit"].as<double>() : 0;
  for (size_t i = 0; i < h["tasks"].size(); ++i) {
    const YAML::Node t = h["tasks"][i];
    const std::string key = "eval.harness.tasks[" + std::to_string(i) + "]";
    TaskConfig c;
    c.num_fewshot = fewshot;
    c.limit = limit;
    if (h["fewshot_random_seed"] && !h["fewshot_random_seed"].IsNull())
      c.fewshot_seed = h["fewshot_random_seed"].as<int64_t>();
    if (t.IsScalar()) {
      c.name = t.as<std::string>();
    } else {
      LINGUA_CHECK(t.IsMap() && t["task"] && t["task"].IsScalar(), "config key '", key,
                   "' must be a task name or a map with a 'task' name");
      c.name = t["task"].as<std::string>();
      if (t["num_fewshot"] && !t["num_fewshot"].IsNull()) c.num_fewshot = t["num_fewshot"].as<int>();
      if (t["limit"] && !t["limit"].IsNull()) c.limit = (int64_t)t["limit"].as<double>();
    }
    LINGUA_CHECK(!c.name.empty() && c.name.find('/') == std::string::npos, "config key '", key, "': task name '",
                 c.name, "' must be a plain name (its file is <eval.task_dir>/<name>.jsonl)");
    c.path = task_dir + "/" + c.name + ".jsonl";
    if (!std::filesystem::exists(c.path)) {
      if (missing) missing->push_back(c.name);
      continue;
    }
    c.type = type_of_file(c.path);
    tasks.push_back(c);
  }
  return tasks;
}

}  // namespace lingua
