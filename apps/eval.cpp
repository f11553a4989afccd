#include <cstdio>
#include <optional>
#include <vector>

#include "apps/commands.h"
#include "lingua/config/config.h"
#include "lingua/config/validate.h"
#include "lingua/eval/tasks.h"
#include "lingua/eval/validation.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/generate/generate.h"

namespace lingua::app {

namespace {
struct EvalCommandConfig {
  std::string ckpt;
  std::string root_dir;  // override the training data directory
  int64_t max_tokens = 0;
  int batch_size = 0;
  bool validation = true;
  std::vector<TaskConfig> tasks;
  std::optional<std::vector<std::string>> task_files;
  std::string device = "cpu";
  std::string tokenizer_path;
  std::optional<std::vector<std::string>> modules;
  std::optional<std::vector<std::string>> sources;
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (uses its newest checkpoint)");
    v("root_dir", root_dir, "data directory with <source>/*.val.jsonl (default: the checkpoint's data.root_dir)");
    v("sources", sources, "the sources to evaluate, e.g. sources=books or sources='[books, code]' (default: the "
      "checkpoint's data.sources)");
    v("max_tokens", max_tokens,
      "validation tokens per source (0: all; scoring stops after the batch that reaches it, and the per-char and "
      "per-byte figures count the text of the scored tokens only)");
    v("batch_size", batch_size, "windows per forward (0: the training batch size)");
    v("validation", validation, "the validation loss on the sources' *.val.jsonl files (false: tasks only)");
    v("tasks", tasks,
      "downstream tasks (a list of {name, path, type, num_fewshot, ...} as eval.tasks; default: the checkpoint's "
      "eval.tasks)");
    v("task_files", task_files, "multiple-choice task files, a shorter form of tasks: task_files='[a.jsonl, b.jsonl]'");
    v.choice("device", device, {"auto", "cpu", "cuda"}, "compute device (auto: cuda when a GPU is present)");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
    v("modules", modules, "module tokens to run, e.g. modules=code or modules='[code, math]' (modules=[]: none, the base "
      "model; null: the checkpoint's model.enabled_modules)");
  }
};
}  // namespace

int eval_main(const Args& args) {
  if (print_help_if_asked<EvalCommandConfig>(args, "lingua eval ckpt=DIR [key=value ...]")) return 0;
  EvalCommandConfig e = parse_config<EvalCommandConfig>(args);
  LINGUA_CHECK(!e.ckpt.empty(), "config key 'ckpt' is required (a checkpoint directory or a dump_dir)");
  LINGUA_CHECK(e.max_tokens >= 0, "config key 'max_tokens' must be >= 0 (0: all), got ", e.max_tokens);
  LINGUA_CHECK(e.batch_size >= 0, "config key 'batch_size' must be >= 0 (0: the training batch size), got ", e.batch_size);
  LoadedModel m = load_model(e.ckpt, e.tokenizer_path, e.device, [&](TrainConfig& c) {
    if (e.modules) c.model.enabled_modules = *e.modules;
  });  // params.json validated as a training config
  DataConfig data = m.config.data;
  if (!e.root_dir.empty()) data.root_dir = e.root_dir;
  if (e.batch_size > 0) data.batch_size = e.batch_size;
  if (e.sources) {
    LINGUA_CHECK(!e.sources->empty(), "config key 'sources' is empty (give a source, or leave it out for the "
                 "checkpoint's)");
    data.sources.clear();
    for (const std::string& s : *e.sources) data.sources[s] = 1.0;
  }
  TrainConfig with_overrides = m.config;
  with_overrides.data = data;
  validate_config(with_overrides);
  std::vector<TaskConfig> tasks = e.tasks.empty() ? m.config.eval.tasks : e.tasks;
  if (e.task_files)
    for (const std::string& f : *e.task_files) {
      TaskConfig t;
      t.path = f;
      tasks.push_back(t);
    }
  check_tasks(tasks, e.tasks.empty() && !e.task_files ? "eval.tasks (of the checkpoint)" : "tasks");
  LINGUA_CHECK(e.validation || !tasks.empty(), "nothing to evaluate: validation=false and no tasks (give tasks= or "
               "task_files=)");
  if (e.validation) {
    auto res = evaluate_validation(*m.exec, *m.tokenizer, data, e.max_tokens);  // fails when there is none
    for (auto& [src, w] : data.sources)
      if (!res.count(src)) std::printf("%s: no *.val.jsonl files, not evaluated\n", src.c_str());
    for (auto& [src, r] : res)
      std::printf("%s: nll_per_token %.4f  nll_per_char %.4f  bits_per_byte %.4f  tokens %lld  bytes %lld  documents %lld  "
                  "avg_seqlen %.2f  skipped_lines %lld\n",
                  src.c_str(), r.nll_per_token(), r.nll_per_char(), r.bits_per_byte(), (long long)r.tokens,
                  (long long)r.bytes, (long long)r.documents, r.avg_seqlen(), (long long)r.stats.skipped());
  }
  if (!tasks.empty()) std::printf("%-24s %-22s %10s %10s %9s\n", "task", "metric", "value", "stderr", "examples");
  for (const TaskConfig& t : tasks) {
    const TaskMetrics r = evaluate_task(*m.exec, *m.tokenizer, t, m.config.data.add_bos,
                                        (int64_t)data.batch_size * data.seq_len);
    for (auto& [k, v] : r) {
      if (k.ends_with("_stderr") || k == "examples" || k == "skipped_lines") continue;
      const auto se = r.find(k + "_stderr");
      std::printf("%-24s %-22s %10.4f %10s %9lld\n", task_name(t).c_str(), k.c_str(), v,
                  se == r.end() ? "" : std::to_string(se->second).substr(0, 6).c_str(), (long long)r.at("examples"));
    }
  }
  return 0;
}

}  // namespace lingua::app
