// G_random's ramp (lingua/exec/growth_ramp.h) on the CPU: at m = 0 a model grown with new random
// blocks computes its source's function; at m = 1 the blocks run whole; in between, every
// parameter's gradient (the ramped blocks', the blocks around them, the embedding's) matches
// finite differences, and KV-cache decoding equals the full forward.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/exec/growth_ramp.h"
#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 23;

ModelConfig tiny(int layers) {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = layers;
  c.n_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = kVocab;
  c.max_seqlen = 24;
  c.seed = 3;
  return c;
}

std::vector<float> logits(ModelRun& m, const std::vector<int32_t>& tok) {
  std::vector<float> out(tok.size() * kVocab);
  m.exec.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

// A 2-layer source grown to 4 with G_random ([0, -1, 1, -1]), the new layers ramped from step 10
// over 20 steps.
struct Grown {
  ModelRun src{tiny(2), resolve_dims(tiny(2), kVocab), Device::cpu, [](Transformer& t) { t.init_weights(77); }};
  ModelRun dst{tiny(4), resolve_dims(tiny(4), kVocab), Device::cpu,
               [this](Transformer& t) { grow_model(src.model, t, GrowthOperator::random, {0, -1, 1, -1}); }};
  GrowthRamp ramp{dst.model, {1, 3}, 10, 20};
  Grown() { dst.exec.add_hooks(&ramp); }
  void at(int64_t step) {
    ramp.set_step(step);
    dst.model.begin_step(step);  // (uploads the staged m)
  }
};

}  // namespace

TEST(GrowthRamp, StartsAtTheSourceFunctionAndEndsAtTheWholeBlocks) {
  Grown g;
  const std::vector<int32_t> tok = random_ids(11, kVocab, 5);
  g.at(10);
  EXPECT_EQ(g.ramp.m(), 0.0);
  const std::vector<float> a = logits(g.src, tok), b = logits(g.dst, tok);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(b[i], a[i], 1e-5) << i;
  // m = 1 (and after): the plain grown model, as without the hook.
  g.at(30);
  EXPECT_EQ(g.ramp.m(), 1.0);
  const std::vector<float> whole = logits(g.dst, tok);
  g.at(45);
  EXPECT_EQ(logits(g.dst, tok), whole);
  ModelRun plain(tiny(4), resolve_dims(tiny(4), kVocab), Device::cpu,
                 [&](Transformer& t) { grow_model(g.src.model, t, GrowthOperator::random, {0, -1, 1, -1}); });
  EXPECT_EQ(logits(plain, tok), whole);
  // Half way: neither.
  g.at(20);
  EXPECT_EQ(g.ramp.m(), 0.5);
  const std::vector<float> half = logits(g.dst, tok);
  double d0 = 0, d1 = 0;
  for (size_t i = 0; i < half.size(); ++i) d0 += std::fabs(half[i] - a[i]), d1 += std::fabs(half[i] - whole[i]);
  EXPECT_GT(d0, 1e-3);
  EXPECT_GT(d1, 1e-3);
}

TEST(GrowthRamp, GradientsMatchFiniteDifferences) {
  Grown g;
  g.at(17);  // m = 0.35
  const int B = 2, T = 6;
  const std::vector<int32_t> tok = random_ids(B * T, kVocab, 6), tgt = random_ids(B * T, kVocab, 7);
  const float scale = 0.1f;
  ParamStore& ps = g.dst.params();
  ps.zero_grads();
  g.dst.exec.forward_backward(tok.data(), tgt.data(), B, T, scale);
  const std::vector<float> grad = ps.host_grads();
  std::mt19937 r(3);
  for (int id : ps.ids()) {
    const ParamInfo& p = ps.info(id);
    for (int k = 0; k < 3; ++k) {
      const int64_t e = (int64_t)(r() % p.numel);
      const double f = finite_difference(g.dst.exec, id, e, tok, tgt, B, T, scale);
      EXPECT_NEAR(grad[p.grad_offset + e], f, 2e-3 + 3e-2 * std::fabs(f)) << p.name << " entry " << e;
    }
  }
}

TEST(GrowthRamp, CachedDecodingEqualsTheFullForward) {
  Grown g;
  g.at(23);
  const int B = 2, T = 7, first = 3;
  const std::vector<int32_t> tok = random_ids(B * T, kVocab, 8);
  std::vector<std::vector<float>> full;
  for (int b = 0; b < B; ++b)
    full.push_back(logits(g.dst, std::vector<int32_t>(tok.begin() + b * T, tok.begin() + (b + 1) * T)));
  KVCache cache = g.dst.exec.make_cache(T, B);
  std::vector<float> step((size_t)B * kVocab);
  std::vector<int32_t> in;
  for (int b = 0; b < B; ++b) in.insert(in.end(), tok.begin() + b * T, tok.begin() + b * T + first);
  g.dst.exec.forward_decode(in.data(), B, first, cache, step.data());
  for (int t = first - 1; t < T; ++t) {
    if (t >= first) {
      std::vector<int32_t> one;
      for (int b = 0; b < B; ++b) one.push_back(tok[b * T + t]);
      g.dst.exec.forward_decode(one.data(), B, 1, cache, step.data());
    }
    for (int b = 0; b < B; ++b)
      for (int v = 0; v < kVocab; ++v)
        EXPECT_NEAR(step[b * kVocab + v], full[b][t * kVocab + v], 1e-4) << "b " << b << " t " << t;
  }
}

TEST(GrowthRamp, RandomGrowthChecks) {
  EXPECT_NO_THROW(check_growth(tiny(2), tiny(4), GrowthOperator::random, {0, -1, 1, -1}));
  ModelConfig wide = tiny(4);
  wide.ffn_dim_multiplier = 1.5;
  EXPECT_THROW(check_growth(tiny(2), wide, GrowthOperator::random, {0, -1, 1, -1}), Error);
  EXPECT_THROW(check_growth(tiny(2), tiny(4), GrowthOperator::stack, {0, -1, 1, -1}), Error);
  EXPECT_EQ(parse_growth_operator("random"), GrowthOperator::random);
}
