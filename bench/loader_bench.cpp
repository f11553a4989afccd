// The data loader's cost per training step (issue 14: the loader must never be the bottleneck of a
// GPU step). Builds the DataLoader of a config (its data section: sources, batch, tokenizer) and
// times `batches` calls of next() after `warmup`, with the pipeline synchronous (load_async=false:
// the whole cost of reading, tokenising and packing on one thread; a shuffle-buffer fill of
// prefetch_size batches happens every prefetch_size calls, so the mean over several fills is the
// cost per batch) and asynchronous (what a training step waits for while the loader keeps up; no
// step runs in between here, so this is the worst case). Prints one JSON line per mode.
//   lingua_loader_bench config=configs/bench_a.yaml data.root_dir=DIR data.sources='{moby_dick: 1.0}' \
//       data.tokenizer.name=hf data.tokenizer.path=tokenizer.json [batches=4 x prefetch_size] [warmup=1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "lingua/config/config.h"
#include "lingua/config/train_config.h"
#include "lingua/data/loader.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args;
    int batches = 0, warmup = 1;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a.rfind("batches=", 0) == 0) {
        batches = std::stoi(a.substr(8));
      } else if (a.rfind("warmup=", 0) == 0) {
        warmup = std::stoi(a.substr(7));
      } else {
        args.push_back(a);
      }
    }
    const TrainConfig cfg = parse_config<TrainConfig>(args);
    const std::unique_ptr<Tokenizer> tok = make_tokenizer(cfg.data.tokenizer);
    for (bool async : {false, true}) {
      DataConfig d = cfg.data;
      d.load_async = async;
      DataLoader loader(d, *tok);
      const int n = batches > 0 ? batches : 4 * std::max(1, d.prefetch_size);  // (several buffer fills)
      for (int i = 0; i < warmup; ++i) loader.next();
      std::vector<double> ms;
      for (int i = 0; i < n; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        const Batch b = loader.next();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        (void)b;
      }
      double sum = 0;
      for (double x : ms) sum += x;
      const double mean = sum / (double)ms.size();
      std::sort(ms.begin(), ms.end());
      std::printf("{\"bench\": \"loader\", \"config\": \"%s\", \"tokenizer\": \"%s\", \"async\": %s, \"batch_size\": %d, "
                  "\"seq_len\": %d, \"tokens_per_batch\": %d, \"prefetch_size\": %d, \"batches\": %d, \"mean_ms\": %.3f, "
                  "\"median_ms\": %.3f, \"max_ms\": %.3f, \"tokens_per_s\": %.0f}\n",
                  cfg.name.c_str(), cfg.data.tokenizer.name.c_str(), async ? "true" : "false", d.batch_size, d.seq_len,
                  d.batch_size * d.seq_len, d.prefetch_size, n, mean, ms[ms.size() / 2], ms.back(),
                  d.batch_size * d.seq_len / (mean / 1e3));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lingua_loader_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
