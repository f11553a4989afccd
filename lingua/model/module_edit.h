#pragma once
// Managing the modules of a model (module tokens, module_tokens.h) by name: add (initialised),
// remove, rename, enable, disable. An edit gives a new config and a new model built from it, every
// parameter copied by name from the source model (a renamed module's from its old name); the
// source is left as it was. `lingua modules` (apps/modules.cpp) applies an edit to a checkpoint
// and writes a new one.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lingua/model/transformer.h"

namespace lingua {

struct ModuleEdit {
  enum Action { add, remove, rename, enable, disable } action = add;
  std::string name;  // the module acted on
  std::string to;    // rename: its new name
  // add, to a model that holds no module yet: module_seq_len and module_agg (0 / "": keep the
  // config's; a model that holds modules must keep its own).
  int seq_len = 0;
  std::string agg;
};

// "add" ... "disable"; parse fails naming the actions.
const char* module_action_name(ModuleEdit::Action a);
ModuleEdit::Action parse_module_action(const std::string& name);

// The config after the edit (the training-only key create_module_name cleared). Errors name the
// problem: no such module (listing those held), the new name taken or invalid, enabling an enabled
// module, a module_seq_len or module_agg that differs from the modules already held.
ModelConfig edit_module_config(const ModelConfig& cfg, const ModuleEdit& e);

// The model of `edited` (from edit_module_config), with the source's dimensions: its parameters
// copied by name from `src` (host memory), an added module's initialised (drawn from model.seed
// and its name, as when a training run creates it).
std::unique_ptr<Transformer> apply_module_edit(const Transformer& src, const ModelConfig& edited, const ModuleEdit& e);

// One line per module a model holds, for `lingua modules list`.
struct ModuleSummary {
  std::string name;
  bool enabled = false;
  int rows = 0;               // module_seq_len
  std::vector<int> layers;    // with a parameter block
  int64_t params = 0;
  double rms = 0;             // root mean square of its values
};
std::vector<ModuleSummary> module_summaries(const Transformer& model, const ModelConfig& cfg);

}  // namespace lingua
