// Model growth of factored FFNs on the GPU (skipped without one). A LowRank, BlockDense or
// BlockShuffle model widened on the host with G_split or G_zero (units kept in their blocks:
// ffn_unit_blocks) computes on the GPU what its source computes there; G_random's masks on a
// factored FFN (the factor that reads the new units) give the CPU's loss and gradients on the GPU;
// G_learn's map gradient on the GPU is the CPU's (a wider model.dim of block FFNs among them).
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/core/cuda.h"
#include "lingua/exec/growth_learn.h"
#include "lingua/exec/growth_testing.h"
#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 301;

// 2 layers of dim 128 (FFN 352; layer 1 factored: model.structured.layers' default), 2 blocks.
ModelConfig config(const std::string& ffn, int layers = 2, double ffn_mult = 1.0) {
  ModelConfig c = growth_test_model(layers, ffn, kVocab);
  c.ffn_dim_multiplier = ffn_mult;
  c.structured.init = "xavier";
  if (ffn == "lowrank") c.structured.rank = 64;
  if (ffn == "blockdense") c.structured.nblocks = 2, c.structured.rank = 64;
  if (ffn == "blockshuffle") c.structured.nblocks = 2;
  return c;
}

void trained(Transformer& t) { noisy_init(t, 1234, 0.05f); }  // (weights away from any init)

double grown_vs_source(const ModelConfig& sc, const ModelConfig& tc, GrowthOperator op, const std::vector<int>& list) {
  return test_util::grown_vs_source(sc, tc, op, list, kVocab, trained);
}

const char* const kFactored[] = {"lowrank", "blockdense", "blockshuffle"};

}  // namespace

TEST(GrowthFactoredCuda, WideningKeepsTheSourcesLogits) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : kFactored) {
    SCOPED_TRACE(ffn);
    // FFN 352 -> 512 (176 -> 256 units in each of 2 blocks). (Layer 0 is dense: the factored
    // layers are the others, so a stacked target takes its layers 1-3 from source layer 1.)
    EXPECT_LT(grown_vs_source(config(ffn), config(ffn, 2, 1.5), GrowthOperator::split, {0, 1}), 2e-2);
    EXPECT_LT(grown_vs_source(config(ffn), config(ffn, 2, 1.5), GrowthOperator::zero, {0, 1}), 2e-2);
    // Not vacuous: stacked layers compute something else.
    EXPECT_GT(grown_vs_source(config(ffn), config(ffn, 4), GrowthOperator::stack, {0, 1, 1, 1}), 1e-3);
  }
}

TEST(GrowthFactoredCuda, RandomWidthMasksMatchCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : kFactored) {
    SCOPED_TRACE(ffn);
    expect_width_ramp_on_gpu_as_cpu(config(ffn), config(ffn, 3, 1.5), {0, -1, 1}, 10, {4}, kVocab, trained);
  }
}

namespace {

// G_learn from `sc` to `tc` on `list`: the map's gradient of one batch on the GPU is the CPU's, and a
// few Adam steps lower the loss there too.
void expect_learned_map_on_gpu_as_cpu(const ModelConfig& sc, const ModelConfig& tc, const std::vector<int>& list,
                                      double lr) {
  ModelRun host(sc, resolve_dims(sc, kVocab), Device::cpu, trained);
  ModelRun cpu(tc, resolve_dims(tc, kVocab), Device::cpu), gpu(tc, resolve_dims(tc, kVocab), Device::cuda);
  LearnedGrowth lc(host.model, cpu.model, list, 3), lg(host.model, gpu.model, list, 3);
  const int B = 2, T = 31;
  auto in = random_ids(B * T, kVocab, 2), tgt = random_ids(B * T, kVocab, 3);
  double loss_c = 0, loss_g = 0;
  const std::vector<double> dc = lc.gradient(cpu.exec, in.data(), tgt.data(), B, T, &loss_c);
  const std::vector<double> dg = lg.gradient(gpu.exec, in.data(), tgt.data(), B, T, &loss_g);
  EXPECT_NEAR(loss_g, loss_c, 1e-2 * loss_c);
  ASSERT_EQ(dg.size(), dc.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < dc.size(); ++i) num += (dg[i] - dc[i]) * (dg[i] - dc[i]), den += dc[i] * dc[i];
  EXPECT_GT(den, 0);
  EXPECT_LT(std::sqrt(num / den), 3e-2);
  const double before = lg.step(gpu.exec, in.data(), tgt.data(), B, T, lr);
  for (int s = 0; s < 4; ++s) lg.step(gpu.exec, in.data(), tgt.data(), B, T, lr);
  double after = 0;
  lg.gradient(gpu.exec, in.data(), tgt.data(), B, T, &after);
  EXPECT_LT(after, before) << "Adam on the map lowers the loss of its batch";
}

}  // namespace

// G_learn (depth and a wider FFN; and a wider model.dim of block FFNs): the map's gradient on the
// GPU is the CPU's, and a step lowers the loss there too.
TEST(GrowthFactoredCuda, LearnedMapGradientMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : {"swiglu", "lowrank", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    // (Every layer factored: a target block mixes every source block's same parameters.)
    ModelConfig sc = config(ffn), tc = config(ffn, 4, 1.5);
    sc.structured.layers = std::vector<int>{0, 1};
    tc.structured.layers = std::vector<int>{0, 1, 2, 3};
    expect_learned_map_on_gpu_as_cpu(sc, tc, {0, 1, 1, 1}, 0.01);
  }
  for (const char* ffn : {"blockdense", "blockshuffle"}) {
    SCOPED_TRACE(std::string(ffn) + " dim 128 -> 192");
    ModelConfig sc = config(ffn), tc = config(ffn);
    sc.structured.layers = tc.structured.layers = std::vector<int>{0, 1};
    sc.n_kv_heads.reset(), tc.n_kv_heads.reset();
    sc.head_dim = tc.head_dim = 64;
    tc.dim = 192;
    tc.n_heads = 3;
    tc.norm_eps = sc.norm_eps * 128.0 / 192.0;
    expect_learned_map_on_gpu_as_cpu(sc, tc, {0, 1}, 1e-3);  // (one dim map for every tensor: smaller steps)
  }
}

// A wider model.dim (128 -> 192, 2 -> 3 heads of 64) with BlockDense and BlockShuffle FFNs: the
// coordinates kept in their blocks (model_dim_blocks), G_zero and G_split keep the source's logits
// on the GPU, and G_random's per-block masks give the CPU's loss and gradients (step 14: the model
// dimension at 0.4).
TEST(GrowthFactoredCuda, WiderModelDimensionOfBlockFfns) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : {"blockdense", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    ModelConfig s = config(ffn), t = config(ffn);
    s.n_kv_heads.reset(), t.n_kv_heads.reset();
    s.head_dim = t.head_dim = 64;
    t.dim = 192;
    t.n_heads = 3;
    t.norm_eps = s.norm_eps * 128.0 / 192.0;
    EXPECT_LT(grown_vs_source(s, t, GrowthOperator::split, {0, 1}), 2e-2);
    EXPECT_LT(grown_vs_source(s, t, GrowthOperator::zero, {0, 1}), 2e-2);
    expect_width_ramp_on_gpu_as_cpu(s, t, {0, 1}, 10, {14}, kVocab, trained);
  }
}
