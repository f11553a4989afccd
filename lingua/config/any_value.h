#pragma once
// A config value of any YAML shape, kept as one line of flow-style YAML ("" when unset). For keys
// whose contents lingua.cpp does not read (Lingua's eval.harness, logging.wandb, ...), so that
// their configs load unchanged and the value is written back as it was given.
#include <string>

namespace lingua {

struct AnyValue {
  std::string yaml;  // e.g. "[hellaswag, {task: nq_open, num_fewshot: 5}]"; "" for null
  bool operator==(const AnyValue&) const = default;
};

}  // namespace lingua
