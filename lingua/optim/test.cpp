#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/model/transformer.h"
#include "lingua/optim/optimizer.h"
#include "lingua/optim/schedule.h"

using namespace lingua;

namespace {
OptimConfig sched(const std::string& name) {
  OptimConfig c;
  c.scheduler = name;
  c.warmup = 10;
  c.lr_min_ratio = 0.1;
  return c;
}
}  // namespace

TEST(Schedule, WarmupIsLinearFromZero) {
  for (auto name : {"constant", "linear", "inv_sqrt", "cosine", "wsd"}) {
    OptimConfig c = sched(name);
    EXPECT_DOUBLE_EQ(lr_multiplier(c, 0, 100), 0.0) << name;
    EXPECT_DOUBLE_EQ(lr_multiplier(c, 5, 100), 0.5) << name;
    EXPECT_NEAR(lr_multiplier(c, 10, 100), 1.0, 1e-12) << name;
  }
}

TEST(Schedule, ShapesMatchLingua) {
  EXPECT_DOUBLE_EQ(lr_multiplier(sched("constant"), 77, 100), 1.0);
  // linear: from 1 at the end of warmup to lr_min_ratio at the last step.
  EXPECT_NEAR(lr_multiplier(sched("linear"), 55, 100), 0.5 * 0.1 + 0.5, 1e-12);
  EXPECT_NEAR(lr_multiplier(sched("linear"), 100, 100), 0.1, 1e-12);
  EXPECT_NEAR(lr_multiplier(sched("linear"), 150, 100), 0.1, 1e-12);
  // inv_sqrt: (warmup / step)^exp_factor floored at the min ratio.
  EXPECT_NEAR(lr_multiplier(sched("inv_sqrt"), 40, 100), std::sqrt(10.0 / 40.0), 1e-12);
  EXPECT_NEAR(lr_multiplier(sched("inv_sqrt"), 100000, 100), 0.1, 1e-12);
  // cosine: min + 0.5 (1 - min)(1 + cos(pi s)), s the progress after warmup.
  EXPECT_NEAR(lr_multiplier(sched("cosine"), 55, 100), 0.1 + 0.5 * 0.9 * (std::cos(M_PI * 0.5) + 1), 1e-12);
  EXPECT_NEAR(lr_multiplier(sched("cosine"), 100, 100), 0.1, 1e-12);
  OptimConfig th = sched("cosine");
  th.cosine_theta = 2.0;
  EXPECT_NEAR(lr_multiplier(th, 55, 100), 0.1 + 0.5 * 0.9 * (std::cos(M_PI * 0.25) + 1), 1e-12);
  // wsd: 1 until the last 10% of steps, then 1/(q/min + 1 - q) down to min.
  OptimConfig w = sched("wsd");
  EXPECT_DOUBLE_EQ(lr_multiplier(w, 90, 100), 1.0);
  EXPECT_NEAR(lr_multiplier(w, 95, 100), 1.0 / (0.5 / 0.1 + 0.5), 1e-12);
  EXPECT_NEAR(lr_multiplier(w, 100, 100), 0.1, 1e-12);
  // Monotone non-increasing after warmup for linear, cosine, wsd.
  for (auto name : {"linear", "cosine", "wsd"})
    for (int s = 10; s < 100; ++s)
      EXPECT_LE(lr_multiplier(sched(name), s + 1, 100), lr_multiplier(sched(name), s, 100) + 1e-15) << name << s;
}

TEST(AdamW, GroupsHaveTheirOwnHyperParametersAndClipping) {
  ParamStore s;
  int a = s.add("a", {3}, {ParamInit::ones});
  int b = s.add("b", {2}, {ParamInit::ones}, "table");
  s.finalize();
  s.init(1);
  for (int i = 0; i < 3; ++i) s.grad(a).f32()[i] = 3.0f;  // norm sqrt(27)
  for (int i = 0; i < 2; ++i) s.grad(b).f32()[i] = 0.1f;  // norm sqrt(0.02)
  OptimConfig c;
  c.lr = 0.01;
  c.weight_decay = 0.0;
  c.clip = 1.0;
  OptimConfig t = c;
  t.lr = 0.5;
  t.weight_decay = 0.5;
  AdamW opt(s, c, {{"table", t}});
  ASSERT_EQ(opt.groups().size(), 2u);
  StepReport r = opt.step(1.0);
  auto norms = opt.last_grad_norms();
  EXPECT_NEAR(norms["default"], std::sqrt(27.0), 1e-6);
  EXPECT_NEAR(norms["table"], std::sqrt(0.02), 1e-6);
  EXPECT_DOUBLE_EQ(r.lr["table"], 0.5);
  // First Adam step moves each weight by ~lr (sign of the gradient), after decoupled decay.
  EXPECT_NEAR(s.param(a).f32()[0], 1.0 - 0.01, 1e-5);
  EXPECT_NEAR(s.param(b).f32()[0], 1.0 * (1 - 0.5 * 0.5) - 0.5, 1e-5);
  // Clipping of the default group scaled its gradient into the first moment.
  EXPECT_NEAR(opt.m(a).f32()[0], 0.1 * 3.0 / std::sqrt(27.0), 1e-6);
  EXPECT_NEAR(opt.m(b).f32()[0], 0.1 * 0.1, 1e-7);
}

TEST(AdamW, OverfitsOneBatch) {
  ModelConfig mc;
  mc.dim = 32;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.multiple_of = 16;
  mc.vocab_size = 31;
  mc.max_seqlen = 32;
  ModelDims d = resolve_dims(mc, 31);
  Transformer m(mc, d);
  const int B = 2, T = 16;
  std::mt19937 g(0);
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (auto& x : tok) x = g() % 31;
  for (auto& x : tgt) x = g() % 31;
  OptimConfig oc;
  oc.lr = 1e-2;
  oc.weight_decay = 0.0;
  AdamW opt(m.params(), oc);
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    m.params().zero_grads();
    LossSum l = m.forward_backward(tok.data(), tgt.data(), B, T, 1.0f / (B * T));
    if (step == 0) first = l.nll / l.tokens;
    last = l.nll / l.tokens;
    opt.step(1.0);
  }
  EXPECT_GT(first, 3.0);  // about ln(31) or above at init
  EXPECT_LT(last, 0.05) << "first " << first;
}

TEST(AdamW, StemGroupOverridesAndSparseRows) {
  OptimConfig c;
  c.lr = 1e-3;
  c.clip = 2.0;
  c.stem.lr = 5e-4;
  c.stem.beta2 = 0.99;
  auto o = group_overrides(c);
  ASSERT_EQ(o.count("stem"), 1u);
  EXPECT_EQ(o["stem"].lr, 5e-4);
  EXPECT_EQ(o["stem"].beta2, 0.99);
  EXPECT_EQ(o["stem"].clip, 2.0);  // unset: the model's
  EXPECT_EQ(o["stem"].weight_decay, c.weight_decay);
  ParamStore s;
  s.add("w", {3, 4}, {ParamInit::trunc_normal, 0.1f});
  s.add("table", {5, 4}, {ParamInit::trunc_normal, 0.1f}, "stem", true, false);
  s.add("vec", {4}, {ParamInit::ones}, "other");
  s.finalize();
  s.init(1);
  AdamW opt(s, c, o);
  ASSERT_EQ(opt.groups().size(), 3u);
  EXPECT_EQ(opt.groups()[1].lr, 5e-4);
  std::vector<int32_t> rows = {0, 1, 0, 0, 1};
  opt.set_sparse_rows("stem", Tensor(rows.data(), {5}));
  EXPECT_THROW(opt.set_sparse_rows("nope", Tensor(rows.data(), {5})), Error);
  EXPECT_THROW(opt.set_sparse_rows("default", Tensor(rows.data(), {5})), Error);  // 3 rows, not 5
  EXPECT_THROW(opt.set_sparse_rows("other", Tensor(rows.data(), {5})), Error);    // not a table
  // One step: rows 1 and 4 move, the others keep their values; the norm is over the touched rows.
  std::vector<float> before(s.params(), s.params() + s.total());
  const ParamInfo& t = s.info(1);
  for (int64_t i = 0; i < t.numel; ++i) s.grads()[t.offset + i] = 0.5f + 0.01f * (float)i;
  opt.step(1.0);
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t j = 0; j < 4; ++j) {
      const int64_t i = t.offset + r * 4 + j;
      if (rows[r]) EXPECT_NE(s.params()[i], before[i]) << r;
      else EXPECT_EQ(s.params()[i], before[i]) << r;
    }
  double sq = 0;
  for (int r : {1, 4})
    for (int j = 0; j < 4; ++j) sq += std::pow(0.5 + 0.01 * (r * 4 + j), 2);
  EXPECT_NEAR(opt.last_grad_norms().at("stem"), std::sqrt(sq), 1e-6);
}
