// Decoding benchmark (structured FFN layers' pre-merge and batched decoding, issue 13): one model of
// a training config, random weights, on the GPU, decoding B sequences in step with the KV cache as
// `lingua generate` does (Executor::forward_decode: a prefill of the prompts, then one token per
// sequence and step, each step's last-position logits copied to the host). For each
// model.structured.premerge_max_tokens value, prompt length and batch it prints one JSON line:
// prefill latency, per-step decode latency and tokens/s (B tokens a step; medians), and the peak
// device memory of that run. decode_ms_per_token is the time of one decode step (a token for each
// of the B sequences). max_batch=1 then doubles the batch from the largest given (up to 32768)
// until a batch no longer fits in device memory, and prints the largest that fits
// ("largest_batch": true) with its speed.
//   lingua_decode_bench config=configs/structured_m_lowrank.yaml [model.ffn=swiglu ...]
//                       [premerge=0,16] [prompts=1,16,128] [batches=1] [max_batch=0] [gen=32] [iters=10]
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

struct DecodeTiming {
  double prefill_ms = 0, step_ms = 0;
  double peak_gib = 0;  // device memory at most during the run (weights included)
};

// B sequences of prompt P then `gen` steps, iters + 2 times (2 warm-ups: plans, the merge).
DecodeTiming time_decode(Transformer& model, int B, int P, int gen, int iters) {
  const int V = model.dims().vocab;
  cuda_reset_peak_memory();
  Executor ex(model);
  std::vector<float> logits((size_t)B * V);
  std::vector<int32_t> prompt((size_t)B * P), next((size_t)B);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = (int32_t)((i * 7919 + 13) % (size_t)V);
  std::vector<double> prefill, step;
  for (int it = 0; it < iters + 2; ++it) {
    KVCache cache = ex.make_cache(P + gen, B);
    cuda_synchronize();
    double t0 = now_ms();
    ex.forward_decode(prompt.data(), B, P, cache, logits.data());  // returns with the logits on the host
    if (it >= 2) prefill.push_back(now_ms() - t0);
    for (int g = 0; g < gen; ++g) {
      for (int b = 0; b < B; ++b) next[b] = (int32_t)((b * 31 + g * 17 + 5) % V);
      t0 = now_ms();
      ex.forward_decode(next.data(), B, 1, cache, logits.data());
      if (it >= 2) step.push_back(now_ms() - t0);
    }
  }
  return {median(prefill), median(step), (double)cuda_peak_memory() / (1 << 30)};
}

int run(int argc, char** argv) {
  std::map<std::string, std::string> own = {{"premerge", "0,16"}, {"prompts", "1,16,128"}, {"gen", "32"},
                                            {"iters", "10"},      {"batches", "1"},        {"max_batch", "0"}};
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
  const bool search = std::stoi(own["max_batch"]) != 0;
  const std::vector<int> prompts = split_ints(own["prompts"]), batches = split_ints(own["batches"]);
  const int longest = *std::max_element(prompts.begin(), prompts.end());
  for (int premerge : split_ints(own["premerge"])) {
    ModelConfig mc = base.model;
    mc.structured.premerge_max_tokens = premerge;
    const ModelDims dims = resolve_dims(mc, mc.vocab_size);
    LINGUA_CHECK(longest + gen <= dims.max_seqlen, "prompts + gen exceed model.max_seqlen (", dims.max_seqlen, ")");
    Transformer model(mc, dims);
    model.to_device(Device::cuda);
    auto print = [&](int P, int B, const DecodeTiming& t, bool largest) {
      std::printf("{\"impl\": \"lingua\", \"bench\": \"decode\", \"name\": \"%s\", \"ffn\": \"%s\", \"describe_ffn\": \"%s\", "
                  "\"dim\": %d, \"n_layers\": %d, \"premerge_max_tokens\": %d, \"prompt\": %d, \"gen\": %d, "
                  "\"batch\": %d, \"largest_batch\": %s, \"prefill_ms\": %.4f, \"decode_ms_per_token\": %.4f, "
                  "\"decode_tokens_per_s\": %.1f, \"peak_mem_gib\": %.3f, \"device\": \"%s\"}\n",
                  base.name.c_str(), mc.ffn.c_str(), model.describe_ffn().c_str(), mc.dim, mc.n_layers, premerge, P,
                  gen, B, largest ? "true" : "false", t.prefill_ms, t.step_ms, 1000.0 * B / t.step_ms, t.peak_gib,
                  cuda_device_name().c_str());
      std::fflush(stdout);
    };
    for (int P : prompts) {
      for (int B : batches) print(P, B, time_decode(model, B, P, gen, iters), false);
      if (!search) continue;
      // Double until a batch does not fit (the allocation fails), from the largest given.
      int fits = 0;
      DecodeTiming best;
      for (int B = *std::max_element(batches.begin(), batches.end()); B <= 32768; B *= 2) {
        try {
          best = time_decode(model, B, P, gen, 1);
          fits = B;
        } catch (const Error& e) {
          const std::string what = e.what();
          if (what.find("out of GPU memory") == std::string::npos) throw;  // not a batch that does not fit
          std::fprintf(stderr, "batch %d does not fit: %s\n", B, e.what());
          break;
        }
      }
      if (fits) print(P, fits, best, true);
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
