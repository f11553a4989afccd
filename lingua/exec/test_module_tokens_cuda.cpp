// Module tokens on the GPU (skipped without one): a model with its modules disabled gives the base
// model's logits bitwise; a training micro-batch's loss and gradients (module blocks included)
// against the CPU, for the cuDNN and the fallback attention; the step is bitwise reproducible;
// batched KV-cache decoding equals the full forward.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/core/cuda.h"
#include "lingua/exec/testing.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU"

ModelConfig config(int dim, int heads, const std::string& agg, std::vector<std::string> modules = {"b", "a"}) {
  ModelConfig c;
  c.dim = dim;
  c.n_layers = 3;
  c.n_heads = heads;
  c.n_kv_heads = 1;
  c.multiple_of = 32;
  c.vocab_size = 301;
  c.max_seqlen = 64;
  c.seed = 13;
  c.modules = modules;
  c.module_seq_len = modules.empty() ? 0 : 5;
  c.module_agg = agg;
  return c;
}

std::vector<float> logits(ModelRun& m, const std::vector<int32_t>& tok) {
  std::vector<float> out(tok.size() * 301);
  m.exec.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

}  // namespace

TEST(ModuleTokensCuda, DisabledModulesGiveTheBaseModelBitwise) {
  SKIP_WITHOUT_GPU();
  ModelConfig base = config(128, 2, "avg", {}), off = config(128, 2, "avg");
  off.enabled_modules = std::vector<std::string>{};
  ModelRun b(base, resolve_dims(base, 301), Device::cuda), o(off, resolve_dims(off, 301), Device::cuda);
  ModelRun on(config(128, 2, "avg"), resolve_dims(config(128, 2, "avg"), 301), Device::cuda);
  auto tok = random_ids(23, 301, 1);
  EXPECT_EQ(logits(b, tok), logits(o, tok));
  EXPECT_NE(logits(b, tok), logits(on, tok));
}

void check_step(const ModelConfig& cfg) {
  ModelDims d = resolve_dims(cfg, 301);
  const int B = 3, T = 29;
  auto tok = random_ids(B * T, 301, 2), tgt = random_ids(B * T, 301, 3);
  ModelRun cpu(cfg, d), gpu(cfg, d, Device::cuda);
  auto run = [&](ModelRun& m) {
    StepGrads r = step_grads(m, tok, tgt, B, T);
    return std::make_pair(r.loss, r.grads);
  };
  auto [lc, gc] = run(cpu);
  auto [lg, gg] = run(gpu);
  EXPECT_NEAR(lg.nll / lg.tokens, lc.nll / lc.tokens, 1e-2 * lc.nll / lc.tokens);
  const std::vector<int>& ids = cpu.params().ids();
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& name = cpu.params().info(ids[i]).name;
    EXPECT_LT(rel_l2(gg[i], gc[i]), 3e-2) << name;
  }
  auto [lg2, gg2] = run(gpu);
  EXPECT_EQ(lg2.nll, lg.nll);
  EXPECT_EQ(gg2, gg);
}

TEST(ModuleTokensCuda, StepMatchesCpuCudnnAttention) {
  SKIP_WITHOUT_GPU();
  check_step(config(128, 2, "mean"));
}

TEST(ModuleTokensCuda, StepMatchesCpuFallbackAttention) {
  SKIP_WITHOUT_GPU();
  check_step(config(36, 3, "sum"));
  check_step(config(36, 3, "stack"));
}

TEST(ModuleTokensCuda, CachedDecodingEqualsTheFullForward) {
  SKIP_WITHOUT_GPU();
  for (const char* agg : {"avg", "drop"}) {
    ModelConfig cfg = config(128, 2, agg);
    ModelRun m(cfg, resolve_dims(cfg, 301), Device::cuda);
    const int B = 3, T = 12, first = 5, V = 301;
    auto tok = random_ids(B * T, V, 4);
    std::vector<std::vector<float>> full;
    for (int b = 0; b < B; ++b) full.push_back(logits(m, std::vector<int32_t>(tok.begin() + b * T, tok.begin() + (b + 1) * T)));
    KVCache cache = m.exec.make_cache(T, B);
    std::vector<float> step((size_t)B * V);
    std::vector<int32_t> in;
    for (int b = 0; b < B; ++b) in.insert(in.end(), tok.begin() + b * T, tok.begin() + b * T + first);
    m.exec.forward_decode(in.data(), B, first, cache, step.data());
    for (int t = first - 1; t < T; ++t) {
      if (t >= first) {
        std::vector<int32_t> one;
        for (int b = 0; b < B; ++b) one.push_back(tok[b * T + t]);
        m.exec.forward_decode(one.data(), B, 1, cache, step.data());
      }
      for (int b = 0; b < B; ++b) {
        std::vector<float> got(step.begin() + b * V, step.begin() + (b + 1) * V);
        std::vector<float> want(full[b].begin() + t * V, full[b].begin() + (t + 1) * V);
        EXPECT_LT(rel_l2(got, want), 2e-2) << agg << " b " << b << " t " << t;
      }
    }
  }
}
