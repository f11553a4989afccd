#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "lingua/config/config.h"
#include "lingua/config/validate.h"
#include "lingua/dist/world.h"
#include "lingua/train/stop_signals.h"
#include "lingua/train/trainer.h"

namespace lingua::app {

bool wants_help(const Args& args) {
  for (auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}

int train_main(const Args& args) {
  if (print_help_if_asked<TrainConfig>(args, "lingua train config=path.yaml [key=value ...]")) return 0;
  TrainConfig cfg = parse_config<TrainConfig>(args);
  const bool lead = process_world().rank() == 0;  // prints for the run (every rank trains)
  if (lead)
    for (const std::string& note : config_notes(cfg)) std::fprintf(stderr, "note: %s\n", note.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  TrainResult r = train(cfg);
  if (r.stop_signal) return kExitStoppedBySignal;  // a job script may requeue on this status
  if (!lead) return 0;
  // The summary: final loss, the last validation, time and tokens; and the page of charts.
  const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60;
  auto last_line = [&](const char* file) {
    const std::vector<nlohmann::json> lines = read_metric_lines((std::filesystem::path(cfg.dump_dir) / file).string());
    return lines.empty() ? nlohmann::json() : lines.back();
  };
  const nlohmann::json m = last_line("metrics.jsonl"), e = last_line("metrics.eval.jsonl");
  std::string summary = "lingua train: done at step " + std::to_string(r.final_step);
  if (!r.losses.empty()) summary += " | loss " + std::to_string(r.losses.back()).substr(0, 6);
  if (e.is_object())
    for (auto it = e.begin(); it != e.end(); ++it)
      if (it.key().ends_with("/nll_per_token") || it.key().ends_with("/acc"))
        summary += " | " + it.key() + " " + std::to_string(it.value().get<double>()).substr(0, 6);
  if (m.is_object() && m.contains("optim/total_tokens"))
    summary += " | " + std::to_string(m["optim/total_tokens"].get<int64_t>()) + " tokens";
  char t[64];
  std::snprintf(t, sizeof t, " | %.1f min", minutes);
  std::fprintf(stderr, "%s%s\nlingua train: checkpoints in %s\n", summary.c_str(), t, checkpoint_root(cfg).c_str());
  try {
    std::fprintf(stderr, "lingua train: charts in %s\n", write_plot({cfg.dump_dir}, "", cfg.name).c_str());
  } catch (const Error& err) {  // (a run never fails for its charts)
    std::fprintf(stderr, "lingua train: note: no charts: %s\n", err.what());
  }
  return 0;
}

}  // namespace lingua::app
