#include <cstdio>

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
  TrainResult r = train(cfg);
  if (r.stop_signal) return kExitStoppedBySignal;  // a job script may requeue on this status
  if (lead) std::fprintf(stderr, "lingua train: done at step %lld; checkpoints in %s\n", (long long)r.final_step,
               checkpoint_root(cfg).c_str());
  return 0;
}

}  // namespace lingua::app
