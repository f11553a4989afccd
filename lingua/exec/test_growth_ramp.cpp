// G_random's ramp (lingua/exec/growth_ramp.h) on the CPU: at m = 0 a model grown with new random
// blocks, FFN units, heads and model coordinates computes its source's function; at m = 1 it runs
// whole; in between, every parameter's gradient (the ramped blocks', the masked weights', the
// blocks around them, the embedding's) matches finite differences, and KV-cache decoding equals
// the full forward. The same for factored FFNs (LowRank, BlockDense, BlockShuffle; guided and
// pre-merged), whose new units are masked on the factor that reads them.
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

namespace {

// Every parameter's gradient (3 random entries each, and with `last_entry` a 2-D or 3-D weight's
// last entry too) against finite differences of the model's loss on one batch.
void expect_gradients_match_finite_differences(ModelRun& m, bool last_entry, const std::string& what) {
  test_util::expect_gradients_match_finite_differences(m, kVocab, 2, 6, last_entry, 3, what);
}

}  // namespace

TEST(GrowthRamp, GradientsMatchFiniteDifferences) {
  Grown g;
  g.at(17);  // m = 0.35
  expect_gradients_match_finite_differences(g.dst, false, "m = 0.35");
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
  EXPECT_NO_THROW(check_growth(tiny(2), wide, GrowthOperator::random, {0, -1, 1, -1}));
  EXPECT_THROW(check_growth(tiny(2), tiny(4), GrowthOperator::stack, {0, -1, 1, -1}), Error);
  EXPECT_EQ(parse_growth_operator("random"), GrowthOperator::random);
  // More heads or a wider model dimension keep head_dim: it must be set.
  ModelConfig heads = tiny(2);
  heads.n_heads = 3;
  EXPECT_THROW(check_growth(tiny(2), heads, GrowthOperator::random, {0, 1}), Error);
}

namespace {

// Width: a 2-layer source (dim 16, 2 heads of 8, FFN 48) grown with G_random to 3 layers
// ([0, -1, 1]: layer 1 new) of dim 24, 3 heads, FFN 64, model.norm_eps scaled by 16 / 24; every
// stage ramps over 5 steps from step 10 (ffn 10-15, dim 15-20, heads 20-25; the new block 10-15).
ModelConfig narrow() {
  ModelConfig c = tiny(2);
  c.head_dim = 8;
  return c;
}
ModelConfig wide() {
  ModelConfig c = narrow();
  c.n_layers = 3;
  c.dim = 24;
  c.n_heads = 3;
  c.norm_eps = c.norm_eps * 16.0 / 24.0;
  return c;
}
const std::vector<int> kList = {0, -1, 1};

struct GrownWide {
  ModelRun src{narrow(), resolve_dims(narrow(), kVocab), Device::cpu, [](Transformer& t) { t.init_weights(77); }};
  ModelRun dst{wide(), resolve_dims(wide(), kVocab), Device::cpu,
               [this](Transformer& t) { grow_model(src.model, t, GrowthOperator::random, kList, 4); }};
  GrowthRamp ramp{dst.model, {1}, 10, 5, src.model.dims()};
  GrownWide() { dst.exec.add_hooks(&ramp); }
  void at(int64_t step) {
    ramp.set_step(step);
    dst.model.begin_step(step);
  }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (double)std::fabs(a[i] - b[i]));
  return d;
}

}  // namespace

// The new entries are the target init's, nothing zero: without the masks the grown model computes
// something else; with every m = 0 it computes the source's function; with every m = 1 it is the
// plain grown model, bitwise.
TEST(GrowthRampWidth, StartsAtTheSourceFunctionAndEndsAtTheWholeModel) {
  GrownWide g;
  EXPECT_EQ(g.ramp.width_stages(), (std::vector<std::string>{"ffn", "dim", "heads"}));
  EXPECT_EQ(g.ramp.end_step(), 25);
  const std::vector<int32_t> tok = random_ids(11, kVocab, 5);
  ModelRun plain(wide(), resolve_dims(wide(), kVocab), Device::cpu,
                 [&](Transformer& t) { grow_model(g.src.model, t, GrowthOperator::random, kList, 4); });
  const std::vector<float> source = logits(g.src, tok), whole = logits(plain, tok);
  EXPECT_GT(max_abs_diff(whole, source), 1e-2);
  // New FFN units, heads and coordinates are the target's init (not zero).
  const ParamStore& ps = plain.params();
  const std::vector<float> w2 = ps.host_param(ps.index("layers.0.feed_forward.w2.weight"));  // [24, 64]
  EXPECT_NE(w2[63], 0.0f);       // row 0, a new unit
  EXPECT_NE(w2[23 * 64], 0.0f);  // a new row (coordinate), an old unit
  g.at(10);
  EXPECT_EQ(g.ramp.m(), 0.0);
  EXPECT_LT(max_abs_diff(logits(g.dst, tok), source), 1e-5);
  g.at(25);
  EXPECT_EQ(logits(g.dst, tok), whole);
  g.at(40);
  EXPECT_EQ(logits(g.dst, tok), whole);
  // The stages, in order.
  g.at(12);
  EXPECT_DOUBLE_EQ(g.ramp.width_m("ffn"), 0.4);
  EXPECT_EQ(g.ramp.width_m("dim"), 0.0);
  g.at(17);
  EXPECT_EQ(g.ramp.width_m("ffn"), 1.0);
  EXPECT_DOUBLE_EQ(g.ramp.width_m("dim"), 0.4);
  EXPECT_EQ(g.ramp.width_m("heads"), 0.0);
  g.at(23);
  EXPECT_DOUBLE_EQ(g.ramp.width_m("heads"), 0.6);
  const std::vector<float> mid = logits(g.dst, tok);
  EXPECT_GT(max_abs_diff(mid, source), 1e-3);
  EXPECT_GT(max_abs_diff(mid, whole), 1e-4);
  // While the FFN's units ramp (the residual stream's new coordinates masked), the function moves
  // only through them.
  g.at(12);
  const std::vector<float> ffn_stage = logits(g.dst, tok);
  EXPECT_GT(max_abs_diff(ffn_stage, source), 1e-4);
}

// Each stage alone (the FFN's width; the heads), with depth unchanged: m = 0 is the source.
TEST(GrowthRampWidth, EachStageAloneStartsAtTheSource) {
  ModelConfig s = narrow(), ffn = narrow(), heads = narrow();
  ffn.ffn_dim_multiplier = 1.5;
  heads.n_heads = 4;
  for (const ModelConfig& t : {ffn, heads}) {
    ModelRun src(s, resolve_dims(s, kVocab), Device::cpu, [](Transformer& m) { m.init_weights(21); });
    ModelRun dst(t, resolve_dims(t, kVocab), Device::cpu,
                 [&](Transformer& m) { grow_model(src.model, m, GrowthOperator::random, {0, 1}); });
    GrowthRamp ramp(dst.model, {}, 0, 3, src.model.dims());
    ASSERT_EQ(ramp.width_stages().size(), 1u);
    dst.exec.add_hooks(&ramp);
    const std::vector<int32_t> tok = random_ids(9, kVocab, 6);
    const std::vector<float> a = logits(src, tok);
    EXPECT_LT(max_abs_diff(logits(dst, tok), a), 1e-5) << ramp.width_stages()[0];
    ramp.set_step(2);
    dst.model.begin_step(2);
    EXPECT_GT(max_abs_diff(logits(dst, tok), a), 1e-4) << ramp.width_stages()[0];
  }
}

// Every parameter's gradient matches finite differences of the masked model's loss, while the
// model dimension ramps (step 17: ffn 1, dim 0.4, the new block whole) and while the heads do (22).
TEST(GrowthRampWidth, GradientsMatchFiniteDifferences) {
  for (int64_t step : {17, 22}) {
    GrownWide g;
    g.at(step);
    // (The last entry of a 2-D weight: a new row and column where any grew.)
    expect_gradients_match_finite_differences(g.dst, true, "step " + std::to_string(step));
  }
}

TEST(GrowthRampWidth, CachedDecodingEqualsTheFullForward) {
  GrownWide g;
  g.at(18);
  expect_cached_decoding_equals_full_forward(g.dst.exec, random_ids(7, kVocab, 8), 3, kVocab, 1e-4);
}

// The masks leave the model when the hook goes: matmuls read the weights again.
TEST(GrowthRampWidth, TheModelRunsWholeWithoutTheHook) {
  GrownWide g;
  const std::vector<int32_t> tok = random_ids(8, kVocab, 9);
  ModelRun plain(wide(), resolve_dims(wide(), kVocab), Device::cpu,
                 [&](Transformer& t) { grow_model(g.src.model, t, GrowthOperator::random, kList, 4); });
  {
    GrowthRamp other(plain.model, {}, 0, 5, g.src.model.dims());
    EXPECT_NE(plain.params().compute_param(plain.params().index("layers.0.attention.wo.weight")).data,
              plain.params().param(plain.params().index("layers.0.attention.wo.weight")).data);
  }
  EXPECT_EQ(plain.params().compute_param(plain.params().index("layers.0.attention.wo.weight")).data,
            plain.params().param(plain.params().index("layers.0.attention.wo.weight")).data);
}

// A weight split over ranks in flat shards (FSDP) gets no view of its own: it is masked where it
// is gathered (weights_gathered; DistributedTrain.RandomGrowthInWidth* run it). A column-sliced
// one is refused, naming it.
TEST(GrowthRampWidth, FlatShardsAreMaskedWhereGatheredColumnSlicesRefused) {
  const ModelConfig s = narrow(), t = wide();
  Transformer model(t, resolve_dims(t, kVocab));
  ParamStore& ps = model.params();
  const int w2 = ps.index("layers.0.feed_forward.w2.weight"), wo = ps.index("layers.0.attention.wo.weight");
  ps.set_placement(w2, Placement::FlatShard(2, 0));
  {
    GrowthRamp ramp(model, {1}, 0, 3, resolve_dims(s, kVocab));
    EXPECT_NE(ps.compute_param(wo).data, ps.param(wo).data) << "a whole weight gets its masked view";
    // The split w2's gathered full view (here: ones, as a sharding layer would set it) is masked in
    // place when gathered: its new units' columns by m_ffn, its new coordinates' rows by m_dim.
    const ParamInfo& p = ps.info(w2);
    const int64_t R = p.shape[0], C = p.shape[1];
    std::vector<float> full((size_t)(R * C), 1.0f), grad((size_t)(R * C), 0.0f);
    ps.set_full_views(w2, Tensor(full.data(), {R, C}), Tensor(grad.data(), {R, C}));
    const ModelDims sd = resolve_dims(s, kVocab);
    for (int64_t step : {2, 4}) {  // m_ffn 2/3, m_dim 0; then m_ffn 1, m_dim 1/3
      std::fill(full.begin(), full.end(), 1.0f);
      ramp.set_step(step);
      model.begin_step(step);
      ramp.weights_gathered(0, StepContext{});
      const float m_ffn = (float)ramp.width_m("ffn"), m_dim = (float)ramp.width_m("dim");
      ASSERT_FLOAT_EQ(m_ffn + m_dim, step == 2 ? 2.0f / 3.0f : 4.0f / 3.0f);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c)
          ASSERT_FLOAT_EQ(full[(size_t)(r * C + c)], (r >= sd.dim ? m_dim : 1.0f) * (c >= sd.hidden ? m_ffn : 1.0f))
              << "step " << step << ": " << r << ", " << c;
    }
    ps.set_full_views(w2, Tensor(), Tensor());
  }
  ps.set_placement(wo, Placement::ColumnSlice(2, 0));
  try {
    GrowthRamp ramp(model, {1}, 0, 3, resolve_dims(s, kVocab));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention.wo.weight' is column-sliced"), std::string::npos) << e.what();
  }
}

namespace {

// Factored FFNs (every layer structured): a 2-layer source (dim 16, 2 heads of 8, FFN 48; LowRank
// and BlockDense of rank 8, BlockDense and BlockShuffle in 4 blocks) grown with G_random to 3
// layers ([0, -1, 1]) of 3 heads and FFN 64 (the block variants: 12 -> 16 units a block, the new
// ones at each block's end), LowRank also to dim 24; stages over 5 steps from step 10 (ffn 10-15,
// [dim 15-20,] heads); xavier factors. `guide_steps` > 0: self-guided guides until that step (both
// models); `premerge`: forwards that keep nothing multiply by the pre-merged weights.
ModelConfig factored(const std::string& ffn, int layers, int guide_steps, bool premerge = false) {
  ModelConfig c = narrow();
  if (premerge) c.structured.premerge_max_tokens = 64;  // (forwards without backward: merged weights)
  c.n_layers = layers;
  c.ffn = ffn;
  if (ffn != "blockshuffle") c.structured.rank = 8;
  if (ffn != "lowrank") c.structured.nblocks = 4;
  c.structured.init = "xavier";  // (N(0, 0.02) factors make an FFN's output too small to see)
  c.structured.layers = std::vector<int>();
  for (int l = 0; l < layers; ++l) c.structured.layers->push_back(l);
  if (guide_steps > 0) {
    c.structured.self_guided.mode = "fixedstep";
    c.structured.self_guided.max_step = guide_steps;
  }
  return c;
}
ModelConfig factored_wide(const std::string& ffn, int guide_steps, bool premerge = false) {
  ModelConfig c = factored(ffn, 3, guide_steps, premerge);
  c.ffn_dim_multiplier = 1.5;
  c.n_heads = 3;
  // (Block FFNs: the coordinates' blocks of 4, BlockShuffle's k^2 = 16 dividing dim and the FFN's 128.)
  c.dim = ffn == "blockshuffle" ? 32 : 24;
  c.multiple_of = 16;
  c.norm_eps = c.norm_eps * 16.0 / c.dim;
  return c;
}

struct GrownFactored {
  ModelConfig s, t;
  ModelRun src, dst, plain;  // plain: the grown model without the hook
  std::unique_ptr<GrowthRamp> ramp;
  GrownFactored(const std::string& ffn, int guide_steps, bool premerge = false)
      : s(factored(ffn, 2, guide_steps, premerge)),
        t(factored_wide(ffn, guide_steps, premerge)),
        src(s, resolve_dims(s, kVocab), Device::cpu, [](Transformer& m) { m.init_weights(77); }),
        dst(t, resolve_dims(t, kVocab), Device::cpu,
            [this](Transformer& m) { grow_model(src.model, m, GrowthOperator::random, kList, 4); }),
        plain(t, resolve_dims(t, kVocab), Device::cpu,
              [this](Transformer& m) { grow_model(src.model, m, GrowthOperator::random, kList, 4); }) {
    ramp = std::make_unique<GrowthRamp>(dst.model, std::vector<int>{1}, 10, 5, src.model.dims());
    dst.exec.add_hooks(ramp.get());
  }
  void at(int64_t step) {
    ramp->set_step(step);
    for (ModelRun* m : {&src, &dst, &plain}) m->model.begin_step(step);  // (a guide's alpha, or its removal)
  }
};

const char* const kFactored[] = {"lowrank", "blockdense", "blockshuffle"};

}  // namespace

// The mask of a factored FFN's new units acts on the factor that reads them (LowRank's w2.a,
// BlockDense's w2.blocks, BlockShuffle's w2.blocks1; per block for the block variants), and on a
// self-guided w2 guide; the model dimension's per block of the block variants' coordinates (and on
// BlockShuffle's middle units, which grow with it): every m = 0 computes the source's function, every m = 1 the plain grown
// model, bitwise; in between neither. Pre-merged weights (made from the masked factors) are made
// again as the m's move.
TEST(GrowthRampFactored, StartsAtTheSourceFunctionAndEndsAtTheWholeModel) {
  for (const char* ffn : kFactored)
    for (int kind : {0, 1, 2}) {
      const int guide_steps = kind == 1 ? 40 : 0;
      const std::string what = std::string(ffn) + (kind == 1 ? " guided" : kind == 2 ? " pre-merged" : "");
      GrownFactored g(ffn, guide_steps, kind == 2);
      EXPECT_EQ(g.ramp->width_stages(), (std::vector<std::string>{"ffn", "dim", "heads"})) << what;
      const std::vector<int32_t> tok = random_ids(11, kVocab, 5);
      g.at(10);
      const std::vector<float> source = logits(g.src, tok);
      EXPECT_GT(max_abs_diff(logits(g.plain, tok), source), 1e-3) << what << ": the new entries matter";
      EXPECT_LT(max_abs_diff(logits(g.dst, tok), source), 1e-5) << what;
      g.at(12);  // (the new block at 0.4, the FFN's units at 0.4, nothing else)
      const std::vector<float> mid = logits(g.dst, tok);
      EXPECT_GT(max_abs_diff(mid, source), 1e-4) << what;
      if (kind == 2) {  // the factored forward's
        GrownFactored f(ffn, 0);
        f.at(12);
        EXPECT_LT(max_abs_diff(mid, logits(f.dst, tok)), 1e-5) << what;
      }
      const int64_t end = g.ramp->end_step();
      EXPECT_EQ(end, 25) << what;
      g.at(end);
      EXPECT_EQ(logits(g.dst, tok), logits(g.plain, tok)) << what;
    }
}

// Only the FFN's units grow (the depth and heads kept): at m = 0 the source, the units alone ramp.
TEST(GrowthRampFactored, TheFfnStageAloneStartsAtTheSource) {
  for (const char* ffn : kFactored) {
    ModelConfig s = factored(ffn, 2, 0), t = s;
    t.ffn_dim_multiplier = 1.5;
    ModelRun src(s, resolve_dims(s, kVocab), Device::cpu, [](Transformer& m) { m.init_weights(21); });
    ModelRun dst(t, resolve_dims(t, kVocab), Device::cpu,
                 [&](Transformer& m) { grow_model(src.model, m, GrowthOperator::random, {0, 1}); });
    GrowthRamp ramp(dst.model, {}, 0, 3, src.model.dims());
    ASSERT_EQ(ramp.width_stages(), std::vector<std::string>{"ffn"}) << ffn;
    dst.exec.add_hooks(&ramp);
    const std::vector<int32_t> tok = random_ids(9, kVocab, 6);
    const std::vector<float> a = logits(src, tok);
    EXPECT_LT(max_abs_diff(logits(dst, tok), a), 1e-5) << ffn;
    ramp.set_step(2);
    dst.model.begin_step(2);
    EXPECT_GT(max_abs_diff(logits(dst, tok), a), 1e-4) << ffn;
  }
}

// Every parameter's gradient (the masked factors' and guides' new columns among them: their last
// entries) matches finite differences mid-ramp: the FFN's units at 0.4 (step 12), the model
// dimension at 0.4 (17: the block FFNs' coordinates masked per block, BlockShuffle's interleaved
// output rows and middle units too).
TEST(GrowthRampFactored, GradientsMatchFiniteDifferences) {
  for (const char* ffn : kFactored)
    for (int guide_steps : {0, 40}) {
      GrownFactored g(ffn, guide_steps);
      for (int64_t step : {12, 17}) {
        g.at(step);
        expect_gradients_match_finite_differences(
            g.dst, true, std::string(ffn) + (guide_steps ? " guided" : "") + " step " + std::to_string(step));
      }
    }
}

// A guide that leaves mid-ramp (removed from the store at its max_step) leaves the masks: the
// others keep masking; at the end the plain grown model, bitwise.
TEST(GrowthRampFactored, AGuideLeavingMidRampIsDropped) {
  GrownFactored g("blockdense", 13);
  const std::vector<int32_t> tok = random_ids(10, kVocab, 4);
  g.at(10);
  EXPECT_LT(max_abs_diff(logits(g.dst, tok), logits(g.src, tok)), 1e-5);
  g.at(13);
  ASSERT_LT(g.dst.params().find("layers.0.feed_forward.w2.guide.weight"), 0);
  expect_gradients_match_finite_differences(g.dst, true, "step 13, no guide");
  g.at(25);
  EXPECT_EQ(logits(g.dst, tok), logits(g.plain, tok));
}

// BlockShuffle whose FFN is narrower than dim (dim 32, 16 -> 32 units, k = 2): fc2's middle width
// is the FFN's and grows with it; its new middle units are masked with the "ffn" stage: m = 0 is
// the source, and the gradients check out mid-ramp.
TEST(GrowthRampFactored, BlockShuffleMiddleUnitsGrowingWithTheFfn) {
  ModelConfig s = factored("blockshuffle", 2, 0), t;
  s.dim = 32;
  s.n_heads = 4;
  s.structured.nblocks = 2;
  s.ffn_dim_multiplier = 0.18;  // 85 * 0.18 -> 16 units
  t = s;
  t.ffn_dim_multiplier = 0.37;  // -> 32
  ASSERT_EQ(resolve_dims(s, kVocab).hidden, 16);
  ASSERT_EQ(resolve_dims(t, kVocab).hidden, 32);
  ModelRun src(s, resolve_dims(s, kVocab), Device::cpu, [](Transformer& m) { m.init_weights(21); });
  ModelRun dst(t, resolve_dims(t, kVocab), Device::cpu,
               [&](Transformer& m) { grow_model(src.model, m, GrowthOperator::random, {0, 1}); });
  GrowthRamp ramp(dst.model, {}, 0, 5, src.model.dims());
  dst.exec.add_hooks(&ramp);
  const std::vector<int32_t> tok = random_ids(9, kVocab, 6);
  EXPECT_LT(max_abs_diff(logits(dst, tok), logits(src, tok)), 1e-5);
  ramp.set_step(2);
  dst.model.begin_step(2);
  EXPECT_GT(max_abs_diff(logits(dst, tok), logits(src, tok)), 1e-4);
  expect_gradients_match_finite_differences(dst, true, "blockshuffle middle units at m = 0.4");
}
