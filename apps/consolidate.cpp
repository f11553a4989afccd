// lingua consolidate: turns a checkpoint saved by several processes (shard_*.safetensors, one per
// rank) into the single-file form (consolidated.safetensors + optimizer.safetensors) in place.
// Every command reads either form; this is for tools that read consolidated.safetensors directly.
#include <cstdio>

#include "apps/commands.h"
#include "lingua/checkpoint/sharded.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"

namespace lingua::app {

namespace {

struct ConsolidateConfig {
  std::string ckpt;  // a checkpoint step directory, or a dump_dir (its newest checkpoint)
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (its newest checkpoint); rewritten in place");
  }
};

}  // namespace

int consolidate_main(const Args& args) {
  if (print_help_if_asked<ConsolidateConfig>(args, "lingua consolidate ckpt=DIR")) return 0;
  const ConsolidateConfig c = parse_config<ConsolidateConfig>(args);
  LINGUA_CHECK(!c.ckpt.empty(), "config key 'ckpt' is required: the checkpoint to consolidate");
  const std::string dir = resolve_checkpoint_dir(c.ckpt);
  const int n = consolidate_checkpoint(dir);
  if (n == 0)
    std::printf("%s is already in the single-file form (%s)\n", dir.c_str(), CheckpointFiles::weights);
  else
    std::printf("%s: %d tensors written to %s and %s; shards removed\n", dir.c_str(), n, CheckpointFiles::weights,
                CheckpointFiles::optimizer);
  return 0;
}

}  // namespace lingua::app
