// G_random with module tokens (lingua/exec/growth_ramp.h, SPEC §4 and §5) on the CPU. New random
// blocks (module_agg=stack: the module stream's entry is the model's, copied whatever layer 0 is)
// and new FFN units, heads and model coordinates (every module_agg: the module rows' new
// coordinates masked before each block whose module parameters mix into them): at every m = 0 the
// grown model computes its source's function; at m = 1 it runs whole; in between every gradient,
// the module parameters' included, matches finite differences (which needs the module hook to read
// its rows' gradient after the ramp has finished it: the executor's nesting of model hooks), and
// KV-cache decoding equals the full forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "lingua/exec/growth_ramp.h"
#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 23;

// Two modules of 2 rows each, both run.
ModelConfig with_modules(int layers, int dim, int heads, const std::string& agg) {
  ModelConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.head_dim = 8;
  c.multiple_of = 8;
  c.vocab_size = kVocab;
  c.max_seqlen = 24;
  c.seed = 3;
  c.norm_eps = c.norm_eps * 16.0 / dim;  // (the grown model's epsilon: the source's function exactly)
  c.modules = {"a", "b"};
  c.enabled_modules = c.modules;
  c.module_seq_len = 2;
  c.module_agg = agg;
  return c;
}

std::vector<float> logits(ModelRun& m, const std::vector<int32_t>& tok) {
  std::vector<float> out(tok.size() * kVocab);
  m.exec.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (double)std::fabs(a[i] - b[i]));
  return d;
}

// A source grown with G_random per `list` into `target`, ramped from step 10 over 5 steps a stage.
struct Grown {
  Grown(const ModelConfig& source, const ModelConfig& target, std::vector<int> list)
      : src(source, resolve_dims(source, kVocab), Device::cpu, [](Transformer& t) { t.init_weights(77); }),
        dst(target, resolve_dims(target, kVocab), Device::cpu,
            [&](Transformer& t) { grow_model(src.model, t, GrowthOperator::random, list, 4); }),
        ramp(dst.model, new_layers(list), 10, 5, src.model.dims()) {
    dst.exec.add_hooks(&ramp);
  }
  void at(int64_t step) {
    ramp.set_step(step);
    dst.model.begin_step(step);
  }
  ModelRun src, dst;
  GrowthRamp ramp;
};

// Every parameter's gradient (3 random entries each and the last) against finite differences; the
// module parameters' among those that move.
void expect_gradients_match_finite_differences(ModelRun& m, const std::string& what) {
  const std::vector<std::string> moved =
      test_util::expect_gradients_match_finite_differences(m, kVocab, 2, 5, true, 5, what);
  EXPECT_TRUE(std::any_of(moved.begin(), moved.end(), [](const std::string& n) { return is_module_param(n); }))
      << what << ": the module rows' gradients are all near zero";
}

}  // namespace

// module_agg=stack, new blocks (layer 0 among them) and every width: the module rows' entry is the
// source's; m = 0 is the source's function, m = 1 the plain grown model; gradients check out while
// the new blocks ramp in and while the model dimension does.
TEST(GrowthRampModules, StackedModulesWithNewBlocksAndWidths) {
  const std::vector<int> list = {-1, 0, -1, 1};
  ModelConfig target = with_modules(4, 24, 3, "stack");
  target.ffn_dim_multiplier = 1.5;
  Grown g(with_modules(2, 16, 2, "stack"), target, list);
  EXPECT_EQ(g.ramp.width_stages(), (std::vector<std::string>{"ffn", "dim", "heads"}));
  // The entry of the module stream (below block 0, a new block) is the source's, in its columns.
  const ParamStore &s = g.src.params(), &t = g.dst.params();
  const std::vector<float> ps = s.host_param(s.index("layers.0.modules.b")),
                           pt = t.host_param(t.index("layers.0.modules.b"));
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 16; ++c) ASSERT_EQ(pt[r * 24 + c], ps[r * 16 + c]) << r << " " << c;
  EXPECT_NE(pt[23], 0.0f);  // a new coordinate: random, masked by the ramp
  const std::vector<int32_t> tok = random_ids(9, kVocab, 5);
  const std::vector<float> source = logits(g.src, tok);
  g.at(10);
  EXPECT_EQ(g.ramp.m(), 0.0);
  EXPECT_LT(max_abs_diff(logits(g.dst, tok), source), 1e-5);
  g.at(25);
  const std::vector<float> whole = logits(g.dst, tok);
  ModelRun plain(target, resolve_dims(target, kVocab), Device::cpu,
                 [&](Transformer& m) { grow_model(g.src.model, m, GrowthOperator::random, list, 4); });
  EXPECT_EQ(logits(plain, tok), whole);
  EXPECT_GT(max_abs_diff(whole, source), 1e-2);
  for (int64_t step : {12, 17}) {  // the new blocks at m = 0.4 (and the FFN's units); the model dimension at 0.4
    g.at(step);
    expect_gradients_match_finite_differences(g.dst, "step " + std::to_string(step));
  }
}

// Every module_agg, the FFN, the model dimension and the heads widened (depth kept): the module
// parameters of every block hold new random coordinates, masked in the rows they set.
TEST(GrowthRampModules, WidthUnderEveryAggregation) {
  for (const std::string agg : {"stack", "sum", "avg", "mean", "drop"}) {
    ModelConfig target = with_modules(3, 24, 3, agg);
    target.ffn_dim_multiplier = 1.5;
    Grown g(with_modules(3, 16, 2, agg), target, {0, 1, 2});
    ASSERT_EQ(g.ramp.width_stages().size(), 3u) << agg;
    const std::vector<int32_t> tok = random_ids(9, kVocab, 5);
    const std::vector<float> source = logits(g.src, tok);
    g.at(10);
    EXPECT_LT(max_abs_diff(logits(g.dst, tok), source), 1e-5) << agg;
    // Only the model dimension still masked: the module rows' new coordinates would move the
    // function if they were not masked where the module parameters set them.
    g.at(15);
    EXPECT_GT(max_abs_diff(logits(g.dst, tok), source), 1e-4) << agg;
    g.at(17);
    expect_gradients_match_finite_differences(g.dst, agg + ", the model dimension at m = 0.4");
  }
}

// Decoding with a KV cache (the module rows in the first call's prefix) equals the full forward
// while the new blocks and the model dimension ramp.
TEST(GrowthRampModules, CachedDecodingEqualsTheFullForward) {
  for (const std::string agg : {"stack", "avg"}) {
    const bool deeper = agg == "stack";
    ModelConfig target = with_modules(deeper ? 4 : 2, 24, 2, agg);
    Grown g(with_modules(2, 16, 2, agg), target, deeper ? std::vector<int>{-1, 0, -1, 1} : std::vector<int>{0, 1});
    g.at(13);
    expect_cached_decoding_equals_full_forward(g.dst.exec, random_ids(7, kVocab, 8), 3, kVocab, 1e-4, agg);
  }
}

// What stays refused: new blocks unless module_agg=stack (a new block's parameters would mix into
// the module rows).
TEST(GrowthRampModules, NewBlocksNeedStackedModules) {
  ModelConfig s = with_modules(2, 16, 2, "sum"), t = with_modules(3, 16, 2, "sum");
  try {
    check_growth(s, t, GrowthOperator::random, {0, -1, 1});
    ADD_FAILURE() << "not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.module_agg=sum"), std::string::npos) << e.what();
  }
  s.module_agg = t.module_agg = "stack";
  EXPECT_NO_THROW(check_growth(s, t, GrowthOperator::random, {0, -1, 1}));
}
