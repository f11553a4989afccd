#include <cstdio>

#include "apps/commands.h"
#include "lingua/config/validate.h"
#include "lingua/dist/world.h"
#include "lingua/train/bench.h"

namespace lingua::app {

int bench_main(const Args& args) {
  if (print_help_if_asked<TrainConfig>(args, "lingua bench config=path.yaml [bench.steps=20 bench.out=file.jsonl ...]"))
    return 0;
  TrainConfig cfg = parse_config<TrainConfig>(args);
  validate_config(cfg);
  BenchResult r = run_bench(cfg);
  if (process_world().rank() != 0) return 0;  // rank 0 reports for every process
  std::printf("%s\n", r.json(cfg).c_str());
  std::fprintf(stderr, "lingua bench: %s on %s x %d | step %.1f ms | %.0f tokens/s | MFU %.1f%% | peak %.2f GiB\n",
               cfg.bench.config_name.c_str(), r.device.c_str(), r.gpus, r.step_ms, r.tokens_per_s, 100 * r.mfu,
               r.peak_mem_gib);
  if (!r.profile.empty()) std::fprintf(stderr, "lingua bench: profile written to %s\n%s", r.trace_path.c_str(), r.profile.c_str());
  return 0;
}

}  // namespace lingua::app
