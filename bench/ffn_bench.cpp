// FFN layer benchmark (structured FFN layers, issue 13): one SwiGLU FFN layer of each variant
// (dense swiglu, lowrank, blockdense, blockshuffle) at the given widths and token counts, on the
// GPU in bf16: forward alone (prefill / decoding: nothing kept) and forward + backward (training).
// Prints one JSON line per (variant, width, tokens) with the median time over `iters` runs, the
// layer's matmul FLOPs and the throughput, so bench/torch_structured_ffn.py (the same layers in
// PyTorch) and the dense layer compare on equal terms.
//   lingua_ffn_bench [widths=768,1024,1536,2048] [tokens=16,256,4096,16384]
//                    [variants=swiglu,lowrank,blockdense,blockshuffle] [rank_ratio=0.5]
//                    [blockdense_rank_ratio=0.25] [nblocks=4] [iters=20] [premerge_max_tokens=0] [graphs=0]
//                    [profile=0]
// premerge_max_tokens (model.structured.premerge_max_tokens): forwards of at most that many tokens
// run the merged dense weights (the pre-merge switch point is where these stop being faster).
// graphs=1 times CUDA-graph replays of the captured work (no host launch cost, as in training).
// profile=1 also prints to stderr, per shape, the time of each op of one forward + backward (the
// profiler's CUDA events around each op: where a layer's time goes).
// hidden = 4 x width (ffn_dim_multiplier 1.5, the paper's GPT-2 sizes); rank = rank_ratio x width
// (lowrank), blockdense_rank_ratio x width (blockdense).
#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/core/profiler.h"
#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"

using namespace lingua;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(x);
  return v;
}

struct Timer {
  void *a = cuda_event_create(), *b = cuda_event_create();
  ~Timer() {
    cuda_event_destroy(a);
    cuda_event_destroy(b);
  }
  template <class F>
  double median_ms(int iters, F&& f) {
    for (int i = 0; i < 3; ++i) f();  // warm-up: plans, workspace
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      cuda_event_record(a);
      f();
      cuda_event_record(b);
      cuda_synchronize();
      t.push_back(cuda_event_elapsed_ms(a, b));
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lingua_ffn_bench: %s\n", e.what());
    return 1;
  }
}

int run(int argc, char** argv) {
  std::map<std::string, std::string> arg = {{"widths", "768,1024,1536,2048"},
                                            {"tokens", "16,256,4096,16384"},
                                            {"variants", "swiglu,lowrank,blockdense,blockshuffle"},
                                            {"rank_ratio", "0.5"},
                                            {"blockdense_rank_ratio", "0.25"},
                                            {"nblocks", "4"},
                                            {"iters", "20"},
                                            {"premerge_max_tokens", "0"},
                                            {"graphs", "0"},
                                            {"profile", "0"}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (eq == std::string::npos || !arg.count(a.substr(0, eq))) {
      std::fprintf(stderr, "lingua_ffn_bench: unknown argument '%s'; valid: widths tokens variants rank_ratio "
                   "blockdense_rank_ratio nblocks iters premerge_max_tokens graphs profile\n", a.c_str());
      return 2;
    }
    arg[a.substr(0, eq)] = a.substr(eq + 1);
  }
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "lingua_ffn_bench: no GPU\n");
    return 1;
  }
  const int iters = std::stoi(arg["iters"]);
  const bool graphs = std::stoi(arg["graphs"]) != 0;
  Timer timer;
  // graphs=1: the work captured once in a CUDA graph (after warm-up runs), the replays timed: the
  // GPU's time without the host's kernel launches, as training with CUDA graphs runs it.
  auto time_ms = [&](auto&& f) {
    if (!graphs) return timer.median_ms(iters, f);
    for (int i = 0; i < 3; ++i) f();
    cuda_synchronize();
    CudaGraph g;
    g.begin_capture();
    f();
    g.end_capture();
    return timer.median_ms(iters, [&] { g.launch(); });
  };
  for (const std::string& variant : split(arg["variants"]))
    for (const std::string& ws : split(arg["widths"])) {
      ModelConfig cfg;
      cfg.dim = std::stoi(ws);
      cfg.n_layers = 1;
      cfg.n_heads = cfg.dim / 64;
      cfg.ffn_dim_multiplier = 1.5;
      cfg.multiple_of = 256;
      cfg.vocab_size = 256;
      cfg.max_seqlen = 1024;
      cfg.ffn = variant;
      cfg.structured.layers = std::vector<int>{0};
      cfg.structured.nblocks = std::stoi(arg["nblocks"]);
      cfg.structured.premerge_max_tokens = std::stoll(arg["premerge_max_tokens"]);
      cfg.structured.rank = (int)(std::stod(arg[variant == "blockdense" ? "blockdense_rank_ratio" : "rank_ratio"]) *
                                  cfg.dim);
      const ModelDims dims = resolve_dims(cfg, cfg.vocab_size);
      ParamStore store;
      std::unique_ptr<FeedForward> ffn = make_ffn(variant, {store, dims, cfg, 0, "layers.0.feed_forward."});
      store.finalize();
      store.init(1);
      store.to_device(Device::cuda);
      const int64_t D = dims.dim;
      for (const std::string& ns : split(arg["tokens"])) {
        const int64_t N = std::stoll(ns);
        DeviceBuffer x_b(N * D * 2), res_b(N * D * 4), dout_b(N * D * 2), dx_b(N * D * 2);
        {  // random inputs: zeros would flatter the tensor cores' power draw and clocks
          std::mt19937 rng(7);
          std::normal_distribution<float> normal(0.0f, 1.0f);
          std::vector<uint16_t> h((size_t)(N * D));
          for (uint16_t& v : h) v = float_to_bf16(normal(rng));
          copy_to_device(x_b.data(), h.data(), h.size() * 2);
          for (uint16_t& v : h) v = float_to_bf16(normal(rng) * 1e-3f);
          copy_to_device(dout_b.data(), h.data(), h.size() * 2);
          std::vector<float> r((size_t)(N * D));
          for (float& v : r) v = normal(rng);
          copy_to_device(res_b.data(), r.data(), r.size() * 4);
        }
        const Tensor x(x_b.data(), {N, D}, DType::bf16, Device::cuda), out(res_b.data(), {N, D}, DType::f32, Device::cuda),
            dout(dout_b.data(), {N, D}, DType::bf16, Device::cuda), dx(dx_b.data(), {N, D}, DType::bf16, Device::cuda);
        Arena saved(Device::cuda), scratch(Device::cuda);
        saved.reserve(ffn->saved_bytes(N, DType::bf16));
        // Without saving, what forward would keep goes to scratch too.
        scratch.reserve(ffn->saved_bytes(N, DType::bf16) + ffn->scratch_bytes(N, DType::bf16));
        StepContext ctx;
        ctx.saved = &saved;
        ctx.scratch = &scratch;
        ctx.act = DType::bf16;
        ctx.seq.B = 1;
        ctx.seq.T = (int)N;
        ctx.save_for_backward = false;
        const double fwd = time_ms([&] { ffn->forward(x, out, out, ctx); });
        ctx.save_for_backward = true;
        const double train = time_ms([&] {
          saved.release_to(0);
          ffn->forward(x, out, out, ctx);
          ffn->backward(x, dout, dx, ctx);
        });
        if (std::stoi(arg["profile"]) != 0) {
          Profiler::instance().start(Device::cuda);
          {
            ProfileScope step("step");
            saved.release_to(0);
            ffn->forward(x, out, out, ctx);
            ffn->backward(x, dout, dx, ctx);
          }
          std::fprintf(stderr, "== %s width %lld tokens %lld\n%s\n", variant.c_str(), (long long)D, (long long)N,
                       profile_summary(Profiler::instance().stop(), 1).c_str());
        }
        const double flops = 2.0 * (double)ffn->matmul_params() * (double)N;
        std::printf("{\"impl\": \"lingua\", \"variant\": \"%s\", \"kind\": \"%s\", \"width\": %lld, \"hidden\": %lld, "
                    "\"rank\": %d, \"nblocks\": %d, \"tokens\": %lld, \"premerge_max_tokens\": %lld, \"graphs\": %s, "
                    "\"params\": %lld, \"forward_ms\": %.4f, "
                    "\"train_ms\": %.4f, \"forward_tflops\": %.2f, \"train_tflops\": %.2f}\n",
                    variant.c_str(), ffn->kind(), (long long)D, (long long)dims.hidden, cfg.structured.rank,
                    cfg.structured.nblocks, (long long)N, (long long)cfg.structured.premerge_max_tokens,
                    graphs ? "true" : "false", (long long)ffn->matmul_params(), fwd, train,
                    flops / fwd * 1e-9, 3 * flops / train * 1e-9);
        std::fflush(stdout);
      }
    }
  return 0;
}
