// Decoding benchmark (structured FFN layers' pre-merge, issue 13): one model of a training config,
// random weights, on the GPU, decoding one sequence with the KV cache as `lingua generate` does
// (Executor::forward_decode: a prefill of the prompt, then one token at a time, each step's
// last-position logits copied to the host). For each model.structured.premerge_max_tokens value
// and each prompt length it prints one JSON line: prefill latency, per-token decode latency and
// tokens/s (medians), and the peak device memory.
//   lingua_decode_bench config=configs/structured_m_lowrank.yaml [model.ffn=swiglu ...]
//                       [premerge=0,16] [prompts=1,16,128] [gen=32] [iters=10]
// Every other key=value is a training-config key (model.*), as `lingua bench` takes them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "lingua/config/config.h"
#include "lingua/config/train_config.h"
#include "lingua/core/cuda.h"
#include "lingua/exec/executor.h"
#include "lingua/model/transformer.h"

using namespace lingua;

namespace {

std::vector<int> split_ints(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stoi(x));
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int run(int argc, char** argv) {
  std::map<std::string, std::string> own = {{"premerge", "0,16"}, {"prompts", "1,16,128"}, {"gen", "32"}, {"iters", "10"}};
  std::vector<std::string> cfg_args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (eq != std::string::npos && own.count(a.substr(0, eq)))
      own[a.substr(0, eq)] = a.substr(eq + 1);
    else
      cfg_args.push_back(a);
  }
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "lingua_decode_bench: no GPU\n");
    return 1;
  }
  const TrainConfig base = parse_config<TrainConfig>(cfg_args);
  const int gen = std::stoi(own["gen"]), iters = std::stoi(own["iters"]);
  const std::vector<int> prompts = split_ints(own["prompts"]);
  const int longest = *std::max_element(prompts.begin(), prompts.end());
  for (int premerge : split_ints(own["premerge"])) {
    ModelConfig mc = base.model;
    mc.structured.premerge_max_tokens = premerge;
    const ModelDims dims = resolve_dims(mc, mc.vocab_size);
    LINGUA_CHECK(longest + gen <= dims.max_seqlen, "prompts + gen exceed model.max_seqlen (", dims.max_seqlen, ")");
    Transformer model(mc, dims);
    model.to_device(Device::cuda);
    Executor ex(model);
    std::vector<float> logits((size_t)dims.vocab);
    std::vector<int32_t> ids((size_t)(longest + gen));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = (int32_t)((i * 7919 + 13) % (size_t)dims.vocab);
    for (int P : prompts) {
      std::vector<double> prefill, step;
      for (int it = 0; it < iters + 2; ++it) {  // 2 warm-up sequences (plans, the merge)
        KVCache cache = ex.make_cache(P + gen);
        cuda_synchronize();
        double t0 = now_ms();
        ex.forward_decode(ids.data(), P, cache, logits.data());  // returns with the logits on the host
        if (it >= 2) prefill.push_back(now_ms() - t0);
        for (int g = 0; g < gen; ++g) {
          t0 = now_ms();
          ex.forward_decode(ids.data() + P + g, 1, cache, logits.data());
          if (it >= 2) step.push_back(now_ms() - t0);
        }
      }
      const double pre = median(prefill), per = median(step);
      std::printf("{\"impl\": \"lingua\", \"bench\": \"decode\", \"name\": \"%s\", \"ffn\": \"%s\", \"describe_ffn\": \"%s\", "
                  "\"dim\": %d, \"n_layers\": %d, \"premerge_max_tokens\": %d, \"prompt\": %d, \"gen\": %d, "
                  "\"prefill_ms\": %.4f, \"decode_ms_per_token\": %.4f, \"decode_tokens_per_s\": %.1f, "
                  "\"peak_mem_gib\": %.3f, \"device\": \"%s\"}\n",
                  base.name.c_str(), mc.ffn.c_str(), model.describe_ffn().c_str(), mc.dim, mc.n_layers, premerge, P,
                  gen, pre, per, 1000.0 / per, (double)cuda_peak_memory() / (1 << 30), cuda_device_name().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lingua_decode_bench: %s\n", e.what());
    return 1;
  }
}
