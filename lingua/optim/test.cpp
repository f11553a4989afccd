#include <gtest/gtest.h>

#include <cmath>
#include <random>

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

ParamSpec spec(const std::string& name, std::vector<int64_t> shape, ParamInit init, std::string group = "default") {
  ParamSpec p;
  p.name = name;
  p.shape = std::move(shape);
  p.init = std::move(init);
  p.group = std::move(group);
  return p;
}

// A group other than "default", as a module declares it.
OptimGroupSpec table_group(double lr, double wd, bool rows_by_ids = false) {
  return {"table",
          [=](const OptimConfig& c) {
            return OptimGroupHyper{lr, wd, c.beta1, c.beta2, c.epsilon, c.clip, rows_by_ids};
          },
          "test tables"};
}

TEST(AdamW, GroupsHaveTheirOwnHyperParametersAndClipping) {
  ParamStore s;
  s.declare_group(table_group(0.5, 0.5));
  int a = s.add(spec("a", {3}, ParamInit::ones()));
  int b = s.add(spec("b", {2}, ParamInit::ones(), "table"));
  s.finalize();
  s.init(1);
  for (int i = 0; i < 3; ++i) s.grad(a).f32()[i] = 3.0f;  // norm sqrt(27)
  for (int i = 0; i < 2; ++i) s.grad(b).f32()[i] = 0.1f;  // norm sqrt(0.02)
  OptimConfig c;
  c.lr = 0.01;
  c.weight_decay = 0.0;
  c.clip = 1.0;
  AdamW opt(s, c);
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
  // An undeclared group is an error naming it.
  ParamStore bad;
  EXPECT_THROW(bad.add(spec("x", {2}, ParamInit::ones(), "nope")), Error);
}

// The optimizer's one path equals the op called directly with the same values (the CPU reads the
// clip coefficient and step constants through pointers, as the GPU does).
TEST(AdamW, UpdateEqualsTheOpBitwise) {
  ParamStore s;
  int w = s.add(spec("w", {5, 7}, ParamInit::trunc_normal(0.3f)));
  s.finalize();
  s.init(4);
  for (int64_t i = 0; i < 35; ++i) s.grad(w).f32()[i] = std::sin(0.7f * (float)i);
  std::vector<float> p = s.host_param(w), g(s.grad(w).f32(), s.grad(w).f32() + 35), m(35, 0.0f), v(35, 0.0f);
  OptimConfig c;
  c.lr = 0.02;
  c.clip = 0.5;
  AdamW opt(s, c);
  for (int step = 1; step <= 3; ++step) {
    opt.step(0.5);
    const double sq = sum_squares(Tensor(g.data(), {35}));
    AdamWHyper h{0.01f, (float)c.beta1, (float)c.beta2, (float)c.epsilon, (float)c.weight_decay, step};
    h.grad_scale = clip_coefficient(std::sqrt(sq), c.clip);
    adamw_update(Tensor(p.data(), {35}), Tensor(g.data(), {35}), Tensor(m.data(), {35}), Tensor(v.data(), {35}), h);
    EXPECT_EQ(s.host_param(w), p) << "step " << step;
    EXPECT_EQ(opt.host_v(w), v) << "step " << step;
  }
}

// A row-sparse group: the rows of the observed input ids move, the others keep their values; the
// norm is over the touched rows.
TEST(AdamW, RowSparseGroupUpdatesTheObservedRows) {
  ParamStore s;
  s.declare_group(table_group(1e-3, 0.1, true));
  s.add(spec("w", {3, 4}, ParamInit::trunc_normal(0.1f)));
  ParamSpec t = spec("table", {5, 4}, ParamInit::trunc_normal(0.1f), "table");
  t.compute_copy = false;
  const int table = s.add(t);
  s.add(spec("vec", {4}, ParamInit::ones()));
  s.finalize();
  s.init(1);
  OptimConfig c;
  AdamW opt(s, c);
  ASSERT_TRUE(opt.row_sparse());
  std::vector<int32_t> ids = {4, 1, 4};
  opt.observe_input_ids(Tensor(ids.data(), {3}), true);
  const std::vector<float> before = s.host_param(table);
  for (int64_t i = 0; i < 20; ++i) s.grad(table).f32()[i] = 0.5f + 0.01f * (float)i;
  opt.step(1.0);
  const std::vector<float> after = s.host_param(table);
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t j = 0; j < 4; ++j) {
      if (r == 1 || r == 4) EXPECT_NE(after[r * 4 + j], before[r * 4 + j]) << r;
      else EXPECT_EQ(after[r * 4 + j], before[r * 4 + j]) << r;
    }
  double sq = 0;
  for (int r : {1, 4})
    for (int j = 0; j < 4; ++j) sq += std::pow(0.5 + 0.01 * (r * 4 + j), 2);
  EXPECT_NEAR(opt.last_grad_norms().at("table"), std::sqrt(sq), 1e-6);
  // A row-sparse parameter must be a table of the same rows.
  ParamStore bad;
  bad.declare_group(table_group(1e-3, 0.1, true));
  bad.add(spec("t1", {5, 4}, ParamInit::ones(), "table"));
  bad.add(spec("t2", {6, 4}, ParamInit::ones(), "table"));
  bad.finalize();
  EXPECT_THROW(AdamW(bad, c), Error);
}

// Frozen parameters have no gradient and no moments, and a step leaves them as they are.
TEST(AdamW, FrozenParametersAreNotTrained) {
  ParamStore s;
  int a = s.add(spec("a", {3}, ParamInit::trunc_normal(0.5f)));
  ParamSpec fz = spec("frozen", {4}, ParamInit::trunc_normal(0.5f));
  fz.trainable = false;
  int f = s.add(fz);
  s.finalize();
  s.init(2);
  EXPECT_EQ(s.grad_total(), 16);  // a only (padded to 16 floats)
  EXPECT_EQ(s.grad(f).data, nullptr);
  for (int i = 0; i < 3; ++i) s.grad(a).f32()[i] = 1.0f;
  const std::vector<float> frozen = s.host_param(f), moving = s.host_param(a);
  AdamW opt(s, OptimConfig{});
  ASSERT_EQ(opt.groups().size(), 1u);
  EXPECT_EQ(opt.groups()[0].params, std::vector<int>{a});
  opt.step(1.0);
  EXPECT_EQ(s.host_param(f), frozen);
  EXPECT_NE(s.host_param(a), moving);
  EXPECT_THROW(opt.m(f), Error);
}

// Parameters added and removed between steps: the buffers are laid out again, the others keep
// their values and moments (by name), the new one starts with its init and zero moments.
TEST(AdamW, StateFollowsTheLayoutByName) {
  ParamStore s;
  int a = s.add(spec("a", {3}, ParamInit::trunc_normal(0.5f)));
  int b = s.add(spec("b", {17}, ParamInit::trunc_normal(0.5f)));
  s.finalize();
  s.init(9);
  AdamW opt(s, OptimConfig{});
  for (int i = 0; i < 3; ++i) s.grad(a).f32()[i] = 0.3f * (float)(i + 1);
  for (int i = 0; i < 17; ++i) s.grad(b).f32()[i] = -0.1f * (float)i;
  opt.step(1.0);
  const std::vector<float> wa = s.host_param(a), wb = s.host_param(b), mb = opt.host_m(b), vb = opt.host_v(b);
  const uint64_t epoch = s.layout_epoch();
  int c = s.add(spec("c", {2, 5}, ParamInit::trunc_normal(0.5f)));
  EXPECT_NE(s.layout_epoch(), epoch);
  s.remove(a);
  EXPECT_EQ(s.find("a"), -1);
  EXPECT_EQ(s.ids(), (std::vector<int>{b, c}));
  EXPECT_EQ(s.host_param(b), wb);
  // c's values are its init: the same as in a store that declared it from the start.
  ParamStore fresh;
  int c2 = fresh.add(spec("c", {2, 5}, ParamInit::trunc_normal(0.5f)));
  fresh.finalize();
  fresh.init(9);
  EXPECT_EQ(s.host_param(c), fresh.host_param(c2));
  opt.prepare(1.0);  // follows the new layout
  EXPECT_EQ(opt.host_m(b), mb);
  EXPECT_EQ(opt.host_v(b), vb);
  EXPECT_EQ(opt.host_m(c), std::vector<float>(10, 0.0f));
  opt.apply();
  EXPECT_EQ(opt.groups()[0].params, (std::vector<int>{b, c}));
  (void)wa;
  // Moments written after a layout change and before the next step stay where they were written
  // (every accessor follows the new layout first), e.g. a checkpoint loaded into a model frozen
  // after the optimizer was made.
  s.set_trainable(c, false);
  const std::vector<float> m7(17, 7.0f), v3(17, 3.0f);
  opt.set_moments(b, m7.data(), v3.data());
  opt.prepare(1.0);
  EXPECT_EQ(opt.host_m(b), m7);
  EXPECT_EQ(opt.host_v(b), v3);
  s.set_trainable(c, true);
  opt.set_moments(c, std::vector<float>(10, 1.0f).data(), std::vector<float>(10, 2.0f).data());
  EXPECT_EQ(opt.host_v(c), std::vector<float>(10, 2.0f));
  EXPECT_EQ(opt.host_m(b), m7);
}
