// G_learn (lingua/exec/growth_learn.h) on the CPU: the map starts as G_stack (every target tensor
// its list's source tensor); dL/dalpha matches finite differences of the loss in alpha; Adam on
// alpha lowers the loss of the batches it learns from.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/exec/growth_learn.h"
#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 19;

ModelConfig tiny(int layers) {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = layers;
  c.n_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = kVocab;
  c.max_seqlen = 24;
  c.seed = 4;
  return c;
}

}  // namespace

TEST(GrowthLearn, StartsAsStackAndItsGradientMatchesFiniteDifferences) {
  ModelRun src(tiny(2), resolve_dims(tiny(2), kVocab), Device::cpu, [](Transformer& t) { t.init_weights(99); });
  ModelRun dst(tiny(4), resolve_dims(tiny(4), kVocab));
  LearnedGrowth learn(src.model, dst.model, {0, 1, 0, 1});
  // At its start: G_stack.
  ModelRun stacked(tiny(4), resolve_dims(tiny(4), kVocab));
  grow_model(src.model, stacked.model, GrowthOperator::stack, {0, 1, 0, 1});
  for (int id : dst.params().ids()) EXPECT_EQ(dst.params().host_param(id), stacked.params().host_param(id));
  // dL/dalpha against central differences.
  const int B = 2, T = 7;
  const std::vector<int32_t> tok = random_ids(B * T, kVocab, 1), tgt = random_ids(B * T, kVocab, 2);
  const std::vector<double> g = learn.gradient(dst.exec, tok.data(), tgt.data(), B, T);
  const std::vector<double> a0 = learn.alpha();
  ASSERT_EQ(g.size(), a0.size());
  auto loss_at = [&](const std::vector<double>& a) {
    learn.set_alpha(a);
    return dst.exec.forward_loss(tok.data(), tgt.data(), B, T).nll / (B * T);
  };
  double norm = 0;
  for (size_t i = 0; i < a0.size(); i += 3) {
    std::vector<double> a = a0;
    a[i] = a0[i] + 1e-2;
    const double lp = loss_at(a);
    a[i] = a0[i] - 1e-2;
    const double lm = loss_at(a);
    const double fd = (lp - lm) / 2e-2;
    EXPECT_NEAR(g[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << "alpha " << i;
    norm += g[i] * g[i];
  }
  EXPECT_GT(norm, 1e-8);
  learn.set_alpha(a0);
}

TEST(GrowthLearn, AdamOnAlphaLowersTheLoss) {
  ModelRun src(tiny(2), resolve_dims(tiny(2), kVocab), Device::cpu, [](Transformer& t) { t.init_weights(99); });
  ModelRun dst(tiny(4), resolve_dims(tiny(4), kVocab));
  LearnedGrowth learn(src.model, dst.model, {0, 1, 0, 1});
  const int B = 2, T = 9;
  const std::vector<int32_t> tok = random_ids(B * T, kVocab, 3), tgt = random_ids(B * T, kVocab, 4);
  const double first = learn.step(dst.exec, tok.data(), tgt.data(), B, T, 0.05);
  double last = first;
  for (int s = 0; s < 30; ++s) last = learn.step(dst.exec, tok.data(), tgt.data(), B, T, 0.05);
  EXPECT_LT(last, first - 0.05) << "first " << first;
  EXPECT_EQ(learn.steps(), 31);
}
