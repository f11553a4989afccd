// Model growth on the GPU (skipped without one): a model grown on the host with a function-keeping
// operator (G_zero in depth, G_split and G_zero in the FFN's width, the heads and the model
// dimension; dense and STEM) computes on the GPU what its source computes there; G_random's ramp
// (growth_ramp.h, in depth and in width) on the GPU gives the CPU's loss and gradients, the same
// bitwise when repeated; the same with module tokens.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/core/cuda.h"
#include "lingua/exec/growth_ramp.h"
#include "lingua/exec/growth_testing.h"
#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 301;

ModelConfig config(int layers, const std::string& ffn = "swiglu") {
  ModelConfig c = growth_test_model(layers, ffn, kVocab);
  c.init_std_factor = "current_depth";
  return c;
}

double grown_vs_source(const ModelConfig& sc, const ModelConfig& tc, GrowthOperator op, const std::vector<int>& list) {
  return test_util::grown_vs_source(sc, tc, op, list, kVocab, [](Transformer& t) { t.init_weights(1234); });
}

// dim 128 -> 192 and 2 -> 3 heads of 64 (no GQA), the target's norm epsilon scaled by 128 / 192
// so the wider stream's RMS matches; the target `layers` deep.
std::pair<ModelConfig, ModelConfig> wider_dim(int layers) {
  ModelConfig s = config(2), t = config(layers);
  s.n_kv_heads.reset(), t.n_kv_heads.reset();
  s.head_dim = t.head_dim = 64;
  t.dim = 192;
  t.n_heads = 3;
  t.norm_eps = s.norm_eps * 128.0 / 192.0;
  return {s, t};
}

}  // namespace

TEST(GrowthCuda, FunctionKeepingGrowthComputesTheSourcesLogits) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  // New identity blocks add zeros to the residual stream.
  EXPECT_LT(grown_vs_source(config(2), config(5), GrowthOperator::zero, {0, -1, 1, -1, -1}), 1e-6);
  ModelConfig s = config(2, "stem"), t = config(4, "stem");
  s.stem_layers = std::vector<int>{1};
  t.stem_layers = std::vector<int>{1, 2};
  EXPECT_LT(grown_vs_source(s, t, GrowthOperator::zero, {0, 1, -1, -1}), 1e-6);
  // Width: the copies' halves and thirds are rounded to the activation dtype (bf16).
  ModelConfig w = config(2);
  w.ffn_dim_multiplier = 1.5;
  EXPECT_LT(grown_vs_source(config(2), w, GrowthOperator::split, {0, 1}), 2e-2);
  EXPECT_LT(grown_vs_source(config(2), w, GrowthOperator::zero, {0, 1}), 2e-2);
  ModelConfig ws = s;
  ws.ffn_dim_multiplier = 1.5;
  EXPECT_LT(grown_vs_source(s, ws, GrowthOperator::split, {0, 1}), 2e-2);
  // Heads: 2 -> 3 of head_dim 64, without GQA.
  ModelConfig hs = config(2), ht = config(2);
  hs.n_kv_heads.reset(), ht.n_kv_heads.reset();
  hs.head_dim = ht.head_dim = 64;
  ht.n_heads = 3;
  EXPECT_LT(grown_vs_source(hs, ht, GrowthOperator::split, {0, 1}), 2e-2);
  EXPECT_LT(grown_vs_source(hs, ht, GrowthOperator::zero, {0, 1}), 2e-2);
  // The model dimension and the heads at once.
  const auto [ds, dt] = wider_dim(2);
  EXPECT_LT(grown_vs_source(ds, dt, GrowthOperator::zero, {0, 1}), 2e-2);
  EXPECT_LT(grown_vs_source(ds, dt, GrowthOperator::split, {0, 1}), 2e-2);
  // Not vacuous: a model grown with G_stack computes something else.
  EXPECT_GT(grown_vs_source(config(2), config(4), GrowthOperator::stack, {0, 1, 0, 1}), 1e-3);
}

TEST(GrowthCuda, RampedStepMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const ModelConfig sc = config(2), tc = config(4);
  auto trained = [](Transformer& t) { t.init_weights(1234); };
  ModelRun host(sc, resolve_dims(sc, kVocab), Device::cpu, trained);
  auto grow = [&](Transformer& t) { grow_model(host.model, t, GrowthOperator::random, {0, -1, 1, -1}); };
  ModelRun cpu(tc, resolve_dims(tc, kVocab), Device::cpu, grow), gpu(tc, resolve_dims(tc, kVocab), Device::cuda, grow);
  GrowthRamp rc(cpu.model, {1, 3}, 0, 20), rg(gpu.model, {1, 3}, 0, 20);
  cpu.exec.add_hooks(&rc);
  gpu.exec.add_hooks(&rg);
  for (auto [m, r] : {std::pair{&cpu, &rc}, std::pair{&gpu, &rg}}) {
    r->set_step(7);  // m = 0.35
    m->model.begin_step(7);
  }
  const int B = 3, T = 29;
  auto tok = random_ids(B * T, kVocab, 2), tgt = random_ids(B * T, kVocab, 3);
  auto run = [&](ModelRun& m) {
    StepGrads r = step_grads(m, tok, tgt, B, T);
    return std::make_pair(r.loss, r.grads);
  };
  auto [lc, gc] = run(cpu);
  auto [lg, gg] = run(gpu);
  EXPECT_NEAR(lg.nll / lg.tokens, lc.nll / lc.tokens, 1e-2 * lc.nll / lc.tokens);
  const std::vector<int>& ids = cpu.params().ids();
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_LT(rel_l2(gg[i], gc[i]), 3e-2) << cpu.params().info(ids[i]).name;
  auto [lg2, gg2] = run(gpu);
  EXPECT_EQ(lg2.nll, lg.nll);
  EXPECT_EQ(gg2, gg);
}

// G_random in width on the GPU (growth_ramp.h's masks: FFN units, model dimension, heads; a new
// block): at every m = 0 the source's logits; mid-ramp, the CPU's loss and gradients, bitwise the
// same when repeated.
TEST(GrowthCuda, WidthMaskedStepMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const auto [sc, tc] = wider_dim(3);
  // At step 14 the model dimension is ramping (0.4), at 23 the heads (0.3).
  expect_width_ramp_on_gpu_as_cpu(sc, tc, {0, -1, 1}, 10, {14, 23}, kVocab, [](Transformer& t) { t.init_weights(1234); });
}

// With module tokens: module_agg=stack with a new block 0 under their entry, and module_agg=avg in
// width alone (the module rows' new coordinates masked before every block).
TEST(GrowthCuda, WidthMaskedStepWithModuleTokensMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const std::string agg : {"stack", "avg"}) {
    SCOPED_TRACE(agg);
    auto [sc, tc] = wider_dim(agg == "stack" ? 3 : 2);
    for (ModelConfig* c : {&sc, &tc}) {
      c->modules = {"a", "b"};
      c->module_seq_len = 3;
      c->module_agg = agg;
    }
    expect_width_ramp_on_gpu_as_cpu(sc, tc, agg == "stack" ? std::vector<int>{-1, 0, 1} : std::vector<int>{0, 1}, 10,
                                    {14}, kVocab, [](Transformer& t) { t.init_weights(1234); });
  }
}
