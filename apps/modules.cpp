// lingua modules: the module tokens of a checkpoint, by name. `list` prints them; add, remove,
// rename, enable and disable write a new checkpoint (OUT/<step>) with the edited model and config,
// and never write to the original.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/model/module_edit.h"

namespace fs = std::filesystem;

namespace lingua::app {

namespace {

struct ModulesConfig {
  std::string ckpt;
  std::string name;
  std::string to;
  int seq_len = 0;
  std::string agg;
  std::string out;
  std::string tokenizer_path;
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (uses its newest checkpoint); never written to");
    v("name", name, "the module to add, remove, rename, enable or disable");
    v("to", to, "rename: the module's new name");
    v("seq_len", seq_len, "add, to a model without modules: rows per module (model.module_seq_len)");
    v("agg", agg, "add, to a model without modules: model.module_agg (stack, sum, avg, mean, drop; default avg)");
    v("out", out, "root directory of the new checkpoint (written as OUT/<step>); required but for list");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
  }
};

const char* kUsage =
    "lingua modules ACTION ckpt=DIR [name=X] [to=Y] [out=DIR]\n"
    "  list                       the modules of a checkpoint (default)\n"
    "  add name=X out=DIR         a new module, initialised from model.seed and its name, enabled\n"
    "                             (a model without modules also takes seq_len=N [agg=avg])\n"
    "  remove name=X out=DIR      drop the module and its parameters\n"
    "  rename name=X to=Y out=DIR\n"
    "  enable name=X out=DIR      run it (model.enabled_modules)\n"
    "  disable name=X out=DIR     keep its parameters, but do not run it";

std::string layers_text(const std::vector<int>& v) {
  if (v.empty()) return "-";
  std::string s = std::to_string(v.front());
  if (v.size() > 1 && v.back() - v.front() + 1 == (int)v.size()) {
    s += '-';
    s += std::to_string(v.back());
    return s;
  }
  for (size_t i = 1; i < v.size(); ++i) {
    s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

}  // namespace

int modules_main(const Args& all) {
  Args args = all;
  std::string action = "list";
  if (!args.empty() && args[0].find('=') == std::string::npos && args[0][0] != '-') {
    action = args[0];
    args.erase(args.begin());
  }
  if (print_help_if_asked<ModulesConfig>(args, kUsage)) return 0;
  ModulesConfig c = parse_config<ModulesConfig>(args);
  LINGUA_CHECK(!c.ckpt.empty(), "config key 'ckpt' is required (a checkpoint directory or a dump_dir)");
  LoadedModel m = load_model(c.ckpt, c.tokenizer_path, "cpu");
  const ModelConfig& mc = m.config.model;
  if (action == "list") {
    std::printf("%s: %zu module%s, module_seq_len %d, module_agg %s\n", m.checkpoint_dir.c_str(), mc.modules.size(),
                mc.modules.size() == 1 ? "" : "s", mc.module_seq_len, mc.module_agg.c_str());
    if (!mc.create_module_name.empty())
      std::printf("(a module-training checkpoint: it trained module %s on the frozen rest)\n",
                  mc.create_module_name.c_str());
    if (!mc.modules.empty()) std::printf("%-20s %-8s %5s %-10s %10s %10s\n", "name", "enabled", "rows", "layers", "params", "rms");
    for (const ModuleSummary& s : module_summaries(*m.model, mc))
      std::printf("%-20s %-8s %5d %-10s %10lld %10.4g\n", s.name.c_str(), s.enabled ? "yes" : "no", s.rows,
                  layers_text(s.layers).c_str(), (long long)s.params, s.rms);
    return 0;
  }
  ModuleEdit e;
  e.action = parse_module_action(action);
  e.name = c.name;
  e.to = c.to;
  e.seq_len = c.seq_len;
  e.agg = c.agg;
  const int64_t step = checkpoint_step(m.checkpoint_dir);
  const std::string out = new_checkpoint_dir(c.ckpt, m.checkpoint_dir, c.out, step);
  TrainConfig cfg = m.config;
  cfg.model = edit_module_config(mc, e);
  std::unique_ptr<Transformer> edited = apply_module_edit(*m.model, cfg.model, e);
  const std::string step_dir = fs::weakly_canonical(fs::absolute(m.checkpoint_dir)).string();
  nlohmann::json record = {{"source_checkpoint", step_dir}, {"step", step}, {"action", action}, {"name", e.name}};
  if (e.action == ModuleEdit::rename) record["to"] = e.to;
  record["modules"] = cfg.model.modules;
  record["enabled_modules"] = cfg.model.enabled_modules.value_or(std::vector<std::string>{});
  const std::string written = save_model_checkpoint(out, step, cfg, *edited, {{"modules_edit.json", record.dump(1) + "\n"}});
  std::fprintf(stderr, "lingua modules: %s %s%s of %s -> %s\n", action.c_str(), e.name.c_str(),
               e.action == ModuleEdit::rename ? (" to " + e.to).c_str() : "", step_dir.c_str(), written.c_str());
  return 0;
}

}  // namespace lingua::app
