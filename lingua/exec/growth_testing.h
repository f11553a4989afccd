#pragma once
// Shared by the GPU growth tests (test_growth_cuda.cpp, test_growth_factored_cuda.cpp): a model's
// logits, and a grown model's against its source's on the GPU.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lingua/exec/growth_ramp.h"
#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"
#include "lingua/ops/testing_cuda.h"

namespace lingua::test_util {

// The GPU growth tests' models: dim 128, 2 heads of 64 (1 KV head), FFN a multiple of 32.
inline ModelConfig growth_test_model(int layers, const std::string& ffn, int vocab) {
  ModelConfig c;
  c.dim = 128;
  c.n_layers = layers;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.multiple_of = 32;
  c.vocab_size = vocab;
  c.max_seqlen = 64;
  c.seed = 5;
  c.ffn = ffn;
  return c;
}

// [tokens, vocab] logits of one sequence.
inline std::vector<float> logits(ModelRun& m, const std::vector<int32_t>& tok, int vocab) {
  std::vector<float> out(tok.size() * (size_t)vocab);
  m.exec.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

// The largest difference between two runs' logits, relative to the largest logit of the first.
inline double relative_logit_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, (double)std::fabs(a[i]));
    diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
  }
  EXPECT_GT(scale, 0);
  return diff / scale;
}

// The source (weights from `trained`) and the model grown from it on the host with `op` (seed 9),
// both run on the GPU: their logits' relative difference on 37 random tokens.
inline double grown_vs_source(const ModelConfig& sc, const ModelConfig& tc, GrowthOperator op,
                              const std::vector<int>& list, int vocab,
                              const std::function<void(Transformer&)>& trained) {
  ModelRun host(sc, resolve_dims(sc, vocab), Device::cpu, trained);
  ModelRun src(sc, resolve_dims(sc, vocab), Device::cuda, trained);
  ModelRun dst(tc, resolve_dims(tc, vocab), Device::cuda,
               [&](Transformer& t) { grow_model(host.model, t, op, list, 9); });
  const std::vector<int32_t> tok = random_ids(37, vocab, 4);
  return relative_logit_diff(logits(src, tok, vocab), logits(dst, tok, vocab));
}

// G_random in width (and depth: `list`'s -1 layers ramped) on the host and on the GPU, ramped over
// ramp_steps per stage from step 0: at every m = 0 the GPU's logits are the source's; at each of
// `steps`, the GPU's loss and gradients are the CPU's, and bitwise the same when repeated.
inline void expect_width_ramp_on_gpu_as_cpu(const ModelConfig& sc, const ModelConfig& tc, const std::vector<int>& list,
                                            int64_t ramp_steps, const std::vector<int64_t>& steps, int vocab,
                                            const std::function<void(Transformer&)>& trained) {
  ModelRun host(sc, resolve_dims(sc, vocab), Device::cpu, trained);
  ModelRun src(sc, resolve_dims(sc, vocab), Device::cuda, trained);
  auto grow = [&](Transformer& t) { grow_model(host.model, t, GrowthOperator::random, list, 9); };
  ModelRun cpu(tc, resolve_dims(tc, vocab), Device::cpu, grow), gpu(tc, resolve_dims(tc, vocab), Device::cuda, grow);
  GrowthRamp rc(cpu.model, new_layers(list), 0, ramp_steps, host.model.dims());
  GrowthRamp rg(gpu.model, new_layers(list), 0, ramp_steps, host.model.dims());
  cpu.exec.add_hooks(&rc);
  gpu.exec.add_hooks(&rg);
  auto at = [&](int64_t step) {
    for (auto [m, r] : {std::pair{&cpu, &rc}, std::pair{&gpu, &rg}}) {
      r->set_step(step);
      m->model.begin_step(step);
    }
  };
  at(0);
  const std::vector<int32_t> tok = random_ids(37, vocab, 4);
  EXPECT_LT(relative_logit_diff(logits(src, tok, vocab), logits(gpu, tok, vocab)), 2e-2)
      << "every m = 0: the source's function";
  for (int64_t step : steps) {
    at(step);
    const int B = 3, T = 29;
    auto in = random_ids(B * T, vocab, 2), tgt = random_ids(B * T, vocab, 3);
    StepGrads c = step_grads(cpu, in, tgt, B, T), g = step_grads(gpu, in, tgt, B, T);
    EXPECT_NEAR(g.loss.nll / g.loss.tokens, c.loss.nll / c.loss.tokens, 1e-2 * c.loss.nll / c.loss.tokens);
    const std::vector<int>& ids = cpu.params().ids();
    for (size_t i = 0; i < ids.size(); ++i)
      EXPECT_LT(rel_l2(g.grads[i], c.grads[i]), 3e-2) << cpu.params().info(ids[i]).name << " step " << step;
    StepGrads g2 = step_grads(gpu, in, tgt, B, T);
    EXPECT_EQ(g2.loss.nll, g.loss.nll);
    EXPECT_EQ(g2.grads, g.grads) << "repeated: bitwise";
  }
}

}  // namespace lingua::test_util
