// growth.carry_moments across widenings (lingua/model/growth.h: grow_moments): the moments grown
// from a source gradient g on a batch (m = g, v = g^2) are the grown model's gradient g' on the same
// batch (m' = g', v' = g'^2), entry by entry, under G_split and G_zero of model.dim (with heads and
// FFN units, model.norm_eps scaled so the function is exact) and of BlockDense and BlockShuffle
// FFNs' units; that is what makes the carried moments right. A run carrying them across G_split of
// model.dim resumes bitwise.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/growth_test_util.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_util;
using namespace lingua::test_e2e;

namespace {

const int kVocab = 17;

ModelConfig tiny(const std::string& ffn = "swiglu") {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.head_dim = 8;
  c.multiple_of = 8;
  c.vocab_size = kVocab;
  c.max_seqlen = 24;
  c.seed = 7;
  c.ffn = ffn;
  if (ffn == "blockdense" || ffn == "blockshuffle") {
    c.structured.nblocks = 4;
    if (ffn == "blockdense") c.structured.rank = 8;
    c.structured.layers = std::vector<int>{0, 1};
  }
  return c;
}

// Its init plus noise (gradients far from the init's).
std::unique_ptr<ModelRun> noisy_model(const ModelConfig& c) {
  return std::make_unique<ModelRun>(c, resolve_dims(c, kVocab), Device::cpu,
                                    [](Transformer& t) { noisy_init(t, 1234); });
}

struct Grown {
  std::unique_ptr<ModelRun> src, dst;
  StepGrads gs, gt;                       // each model's gradient on one batch (ids order)
  std::map<int, Moments> moments;         // by target id: grown from m = gs, v = gs^2
};

Grown grow_on_a_batch(const ModelConfig& s, const ModelConfig& t, GrowthOperator op) {
  Grown g;
  g.src = noisy_model(s);
  g.dst = std::make_unique<ModelRun>(t, resolve_dims(t, kVocab));
  grow_model(g.src->model, g.dst->model, op, {0, 1}, 5);
  const int B = 2, T = 12;
  const auto tok = random_ids(B * T, kVocab, 3), tgt = random_ids(B * T, kVocab, 4);
  g.gs = step_grads(*g.src, tok, tgt, B, T);
  g.gt = step_grads(*g.dst, tok, tgt, B, T);
  const std::vector<int> sids = g.src->params().ids();
  grow_moments(
      g.src->model, g.dst->model, op, {0, 1}, 5,
      [&](int sid) {
        const size_t k = (size_t)(std::find(sids.begin(), sids.end(), sid) - sids.begin());
        Moments mv{g.gs.grads[k], g.gs.grads[k]};
        for (float& x : mv.v) x *= x;
        return mv;
      },
      [&](int id, const Moments& mv) { g.moments[id] = mv; });
  return g;
}

// m' = g' and v' = g'^2 for every trainable target parameter (fp32 rounding: relative to the
// parameter's largest gradient).
void expect_moments_are_the_gradients(const Grown& g, const std::string& what) {
  const ParamStore& ps = g.dst->params();
  const std::vector<int> ids = ps.ids();
  for (size_t k = 0; k < ids.size(); ++k) {
    const std::vector<float>& grad = g.gt.grads[k];
    if (grad.empty()) continue;
    const auto it = g.moments.find(ids[k]);
    ASSERT_TRUE(it != g.moments.end() && it->second.m.size() == grad.size()) << what << ": " << ps.info(ids[k]).name;
    float top = 0;
    for (float x : grad) top = std::max(top, std::abs(x));
    const double tol = 2e-4 * top + 1e-9;
    for (size_t i = 0; i < grad.size(); ++i) {
      ASSERT_NEAR(it->second.m[i], grad[i], tol) << what << ": " << ps.info(ids[k]).name << " entry " << i;
      ASSERT_NEAR(std::sqrt(it->second.v[i]), std::abs(grad[i]), tol) << what << ": " << ps.info(ids[k]).name << " " << i;
    }
  }
}

// G_split of model.dim 16 -> 24 (and 2 -> 3 heads, a 1.5x FFN): every gradient of the grown model
// is the source entry's times the factors grow_moments applies (a coordinate with n copies: 1/sqrt(n)
// on any weight's dim axis, 1/(a n) for a norm weight, a = sqrt(16 / 24); a unit with c copies: 1/c
// on its output side). The final norm's factor checked by hand too.
TEST(GrowthMoments, SplitModelDimensionCarriesTheGrownGradients) {
  ModelConfig s = tiny(), t = tiny();
  t.dim = 24;
  t.norm_eps = s.norm_eps * 16.0f / 24.0f;  // (the function exact: the gradients too)
  ModelConfig big = t;
  big.n_heads = 3;
  big.ffn_dim_multiplier = 1.5;
  for (const ModelConfig& target : {t, big}) {
    const Grown g = grow_on_a_batch(s, target, GrowthOperator::split);
    expect_moments_are_the_gradients(g, "split dim " + std::to_string(target.n_heads) + " heads");
    // norm.weight: coordinate j copies source s(j), n copies of it: g'_j = g_s / (a n).
    const SplitChoice c = split_choice(16, 24, 5, -1);
    const int ts = g.dst->params().index("norm.weight"), ss = g.src->params().index("norm.weight");
    const std::vector<int> tid = g.dst->params().ids(), sid = g.src->params().ids();
    const auto& gt = g.gt.grads[(size_t)(std::find(tid.begin(), tid.end(), ts) - tid.begin())];
    const auto& gs = g.gs.grads[(size_t)(std::find(sid.begin(), sid.end(), ss) - sid.begin())];
    const double a = std::sqrt(16.0 / 24.0);
    int copied = 0;
    for (int j = 0; j < 24; ++j) {
      const int64_t from = c.map[(size_t)j];
      const int n = c.copies[(size_t)from];
      copied += n > 1;
      EXPECT_NEAR(gt[(size_t)j], gs[(size_t)from] / (a * n), 2e-4 * std::abs(gs[(size_t)from]) + 1e-8) << j;
    }
    EXPECT_GE(copied, 16);
  }
  // G_learn's start is G_split: the same moments.
  std::map<int, Moments> split, learn;
  auto fake = [&](const ParamStore& ps) {
    return [&ps](int sid) { return Moments{ps.host_param(sid), ps.host_param(sid)}; };
  };
  auto src = noisy_model(s);
  ModelRun dst(big, resolve_dims(big, kVocab));
  grow_moments(src->model, dst.model, GrowthOperator::split, {0, 1}, 5, fake(src->params()),
               [&](int id, const Moments& mv) { split[id] = mv; });
  grow_moments(src->model, dst.model, GrowthOperator::learn, {0, 1}, 5, fake(src->params()),
               [&](int id, const Moments& mv) { learn[id] = mv; });
  ASSERT_EQ(split.size(), learn.size());
  for (auto& [id, mv] : split) EXPECT_EQ(mv.m, learn[id].m) << dst.params().info(id).name;
}

// G_zero of model.dim: the new coordinates' gradients are zero, and so are their moments.
TEST(GrowthMoments, ZeroModelDimensionCarriesTheGrownGradients) {
  ModelConfig s = tiny(), t = tiny();
  t.dim = 24;
  t.n_heads = 3;
  t.norm_eps = s.norm_eps * 16.0f / 24.0f;
  expect_moments_are_the_gradients(grow_on_a_batch(s, t, GrowthOperator::zero), "zero dim");
}

// BlockDense and BlockShuffle FFNs widened (48 -> 64 units in 4 blocks; and in model.dim): G_zero's
// new units have zero gradients and moments, G_split's copies those of G_split's units (output side / c).
TEST(GrowthMoments, BlockFfnUnitsCarryTheGrownGradients) {
  for (const std::string ffn : {"blockdense", "blockshuffle"})
    for (GrowthOperator op : {GrowthOperator::zero, GrowthOperator::split}) {
      ModelConfig s = tiny(ffn), t = tiny(ffn);
      t.ffn_dim_multiplier = 1.5;
      expect_moments_are_the_gradients(grow_on_a_batch(s, t, op), ffn + " " + growth_operator_name(op));
      // And model.dim (BlockDense 16 -> 24, BlockShuffle 16 -> 32: k^2 divides it), its coordinates
      // and BlockShuffle's middle units kept in their blocks.
      ModelConfig d = tiny(ffn);
      d.dim = ffn == "blockshuffle" ? 32 : 24;
      d.multiple_of = 16;
      d.norm_eps = s.norm_eps * 16.0f / (float)d.dim;
      expect_moments_are_the_gradients(grow_on_a_batch(s, d, op), ffn + " dim " + growth_operator_name(op));
    }
}

// A run carrying the moments across G_split of model.dim (16 -> 32, 2 -> 4 heads) differs from a
// fresh optimizer's after the growth and resumes bitwise when stopped after it.
TEST(GrowthMoments, RunCarriesMomentsAcrossSplitOfModelDimensionAndResumesBitwise) {
  const fs::path data = make_corpus("growmom_split_dim");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = tiny_config(data, temp_dir("growmom_fresh"));
  c.steps = 6;
  c.checkpoint.dump.every = 1;
  c.checkpoint.eval.every = 0;
  c.model.n_layers = 2;
  c.model.n_kv_heads.reset();
  c.model.head_dim = 8;
  c.model.norm_eps = 1e-5f;
  c.growth.step = 3;
  c.growth.op = "split";
  c.growth.seed = 3;
  c.growth.source.yaml = "{dim: 16, n_heads: 2, norm_eps: 2.0e-5}";
  const TrainResult fresh = train(c, quiet);
  c.dump_dir = temp_dir("growmom_carry").string();
  c.growth.carry_moments = true;
  const TrainResult carried = train(c, quiet);
  ASSERT_EQ(carried.losses.size(), 6u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(carried.losses[i], fresh.losses[i]) << "the same until the first grown update";
  EXPECT_NE(carried.losses[5], fresh.losses[5]);
  for (double l : carried.losses) EXPECT_TRUE(std::isfinite(l));
  for (int k : {4, 5}) {
    TrainConfig r = c;
    r.dump_dir = temp_dir("growmom_carry_stop" + std::to_string(k)).string();
    TrainHooks stop = quiet;
    stop.after_step = [k](int64_t step) { return step < k; };
    ASSERT_EQ(train(r, stop).final_step, k);
    const TrainResult rest = train(r, quiet);
    ASSERT_EQ(rest.final_step, 6);
    for (size_t i = 0; i < rest.losses.size(); ++i)
      EXPECT_EQ(rest.losses[i], carried.losses[rest.start_step + i]) << "stopped at " << k;
  }
}

// In one run, a BlockShuffle model (2 blocks) grown by G_split in model.dim (16 -> 32) with its
// moments: the first grown loss is the source's next one, and the run resumes bitwise after it.
TEST(GrowthMoments, RunGrowsBlockShuffleModelDimension) {
  const fs::path data = make_corpus("growmom_shuffle_dim");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = tiny_config(data, temp_dir("growmom_shuffle"));
  c.steps = 5;
  c.checkpoint.dump.every = 1;
  c.checkpoint.eval.every = 0;
  c.model.ffn = "blockshuffle";
  c.model.structured.nblocks = 2;
  c.model.n_kv_heads.reset();
  c.model.head_dim = 8;
  c.model.norm_eps = 1e-5f;
  c.growth.step = 3;
  c.growth.op = "split";
  c.growth.carry_moments = true;
  c.growth.source.yaml = "{dim: 16, n_heads: 2, norm_eps: 2.0e-5}";
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 5u);
  TrainConfig src = c;
  src.model = growth_source_model(c);
  src.growth = GrowthConfig{};
  src.dump_dir = temp_dir("growmom_shuffle_src").string();
  src.steps = 3;
  train(src, quiet);
  src.steps = 4;
  EXPECT_NEAR(train(src, quiet).losses.at(0), whole.losses[3], 1e-5) << "G_split keeps the function";
  expect_resumes_bitwise(c, whole, {4}, "growmom_shuffle");
}

}  // namespace
