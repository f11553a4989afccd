// G_learn (lingua/exec/growth_learn.h) on the CPU: the map starts as G_stack (every target tensor
// its list's source tensor); dL/dalpha matches finite differences of the loss in alpha; Adam on
// alpha lowers the loss of the batches it learns from. In width (growth_learn_width.h): the map
// starts as G_split bitwise, every width matrix's gradient matches finite differences (a wider FFN,
// more heads, a wider model.dim, each alone and with depth; SwiGLU, LowRank and STEM FFNs; the
// block-structured BlockDense and BlockShuffle with a wider FFN, more heads and depth: their block
// factors expanded in dense form, units kept in their blocks), Adam on the whole map learns, and
// check_growth takes G_split's widenings for G_learn.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <random>

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

// With module tokens: module_agg=sum's per-block module parameters are mixed like the blocks'
// (dL/dalpha checks out); module_agg=stack's entry (layers.0.modules.*) is the model's, copied
// whatever the list puts first. Both start as G_stack.
TEST(GrowthLearn, ModuleTokensStartAsStack) {
  for (const std::string agg : {"sum", "stack"}) {
    ModelConfig s = tiny(2), t = tiny(4);
    for (ModelConfig* c : {&s, &t}) {
      c->modules = {"m"};
      c->module_seq_len = 2;
      c->module_agg = agg;
    }
    const std::vector<int> list = {1, 0, 1, 0};
    ModelRun src(s, resolve_dims(s, kVocab), Device::cpu, [](Transformer& m) { m.init_weights(99); });
    ModelRun dst(t, resolve_dims(t, kVocab)), stacked(t, resolve_dims(t, kVocab));
    LearnedGrowth learn(src.model, dst.model, list);
    grow_model(src.model, stacked.model, GrowthOperator::stack, list);
    for (int id : dst.params().ids())
      EXPECT_EQ(dst.params().host_param(id), stacked.params().host_param(id)) << dst.params().info(id).name << " " << agg;
    const int B = 2, T = 5;
    const std::vector<int32_t> tok = random_ids(B * T, kVocab, 1), tgt = random_ids(B * T, kVocab, 2);
    const std::vector<double> g = learn.gradient(dst.exec, tok.data(), tgt.data(), B, T);
    const std::vector<double> a0 = learn.alpha();
    for (size_t i = 0; i < a0.size(); i += 2) {
      std::vector<double> a = a0;
      a[i] = a0[i] + 1e-2;
      learn.set_alpha(a);
      const double lp = dst.exec.forward_loss(tok.data(), tgt.data(), B, T).nll / (B * T);
      a[i] = a0[i] - 1e-2;
      learn.set_alpha(a);
      const double lm = dst.exec.forward_loss(tok.data(), tgt.data(), B, T).nll / (B * T);
      EXPECT_NEAR(g[i], (lp - lm) / 2e-2, 2e-3 + 3e-2 * std::fabs((lp - lm) / 2e-2)) << "alpha " << i << " " << agg;
    }
    learn.set_alpha(a0);
  }
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

namespace {

// A source of 2 layers, dim 12, 2 heads of 6, FFN 32 units (multiple_of 1), and its targets (sizes
// with hidden x dim a multiple of 16: w1 and w3 are one matrix only when adjacent in the store).
ModelConfig narrow() {
  ModelConfig c = tiny(2);
  c.dim = 12;
  c.head_dim = 6;
  c.multiple_of = 1;
  return c;
}
struct WidthCase {
  const char* name;
  ModelConfig target;
  std::vector<int> list;
};
std::vector<WidthCase> width_cases() {
  std::vector<WidthCase> v;
  ModelConfig h = narrow();
  h.ffn_dim_multiplier = 1.4;  // 32 -> 44 units
  v.push_back({"hidden", h, {0, 1}});
  ModelConfig q = narrow();
  q.n_heads = 3;
  v.push_back({"heads", q, {0, 1}});
  ModelConfig d = narrow();
  d.dim = 17;
  d.ffn_dim_multiplier = 0.72;  // (the FFN keeps its 32 units: floor(0.72 * 45))
  v.push_back({"dim", d, {0, 1}});
  ModelConfig all = narrow();
  all.n_layers = 3;
  all.dim = 17;
  all.ffn_dim_multiplier = 1.07;  // 45 -> 48 FFN units
  all.n_heads = 3;
  v.push_back({"all_and_depth", all, {1, 0, 1}});
  ModelConfig hd = h;
  hd.n_layers = 3;
  v.push_back({"hidden_and_depth", hd, {0, 1, 1}});
  ModelConfig d4 = narrow();
  d4.dim = 20;                   // (4 divides it: BlockDense's 4 blocks, BlockShuffle's 2 x 2)
  d4.ffn_dim_multiplier = 0.61;  // (the FFN keeps its 32 units: floor(0.61 * 53))
  v.push_back({"dim20", d4, {0, 1}});
  return v;
}

// The same source and targets with another FFN variant: LowRank (the hidden axis is the rows of the
// factors w1.b and w3.b, the columns of w2.a), STEM (its tables' columns), BlockDense (4 blocks, rank
// 8: w13.dense's 2hidden rows, w2.blocks' per-block columns) or BlockShuffle (2 blocks: 2 * 2
// divides 32 and 44; w13.blocks2's interleaved rows, w2.blocks1's columns), in every layer (G_learn
// mixes blocks that hold the same parameters).
ModelConfig with_ffn(ModelConfig c, const std::string& ffn) {
  c.ffn = ffn;
  std::vector<int> all(c.n_layers);
  std::iota(all.begin(), all.end(), 0);
  if (ffn == "lowrank") {
    c.structured.rank = 4;
    c.structured.layers = all;
  }
  if (ffn == "stem") c.stem_layers = all;
  if (ffn == "blockdense" || ffn == "blockshuffle") {
    c.structured.layers = all;
    c.structured.nblocks = ffn == "blockdense" ? 4 : 2;
    if (ffn == "blockdense") c.structured.rank = 8;
  }
  return c;
}
// The block FFNs widen model.dim in their blocks: 4 must divide it (BlockDense's 4 blocks,
// BlockShuffle's 2 x 2), as 12 -> 20 does; 17 is refused.
bool grows_dim(const ModelConfig& target) { return target.dim % 4 != 0; }

// Its init plus noise, as training leaves it (no factor zero, as LowRank's w2.b starts).
std::unique_ptr<ModelRun> source_model(const std::string& ffn = "swiglu") {
  const ModelConfig c = with_ffn(narrow(), ffn);
  return std::make_unique<ModelRun>(c, resolve_dims(c, kVocab), Device::cpu,
                                    [](Transformer& t) { noisy_init(t, 99); });
}

}  // namespace

TEST(GrowthLearnWidth, StartsAsSplitBitwise) {
  for (const std::string ffn : {"swiglu", "lowrank", "stem", "blockdense", "blockshuffle"}) {
  const auto src = source_model(ffn);
  for (WidthCase c : width_cases()) {
    if (ffn.rfind("block", 0) == 0 && grows_dim(c.target)) continue;
    SCOPED_TRACE(std::string(c.name) + " " + ffn);
    c.target = with_ffn(c.target, ffn);
    check_growth(with_ffn(narrow(), ffn), c.target, GrowthOperator::learn, c.list);
    ModelRun dst(c.target, resolve_dims(c.target, kVocab));
    LearnedGrowth learn(src->model, dst.model, c.list, 7);
    ModelRun split(c.target, resolve_dims(c.target, kVocab));
    grow_model(src->model, split.model, GrowthOperator::split, c.list, 7);
    EXPECT_FALSE(learn.width().empty());
    for (int id : dst.params().ids())
      EXPECT_EQ(dst.params().host_param(id), split.params().host_param(id)) << dst.params().info(id).name;
    // (Not G_zero's start: the new units are copies.)
    ModelRun zero(c.target, resolve_dims(c.target, kVocab));
    grow_model(src->model, zero.model, GrowthOperator::zero, c.list, 7);
    bool differs = false;
    for (int id : dst.params().ids()) differs |= dst.params().host_param(id) != zero.params().host_param(id);
    EXPECT_TRUE(differs);
  }
  }
}

TEST(GrowthLearnWidth, EveryGradientMatchesFiniteDifferences) {
  const int B = 2, T = 7;
  const std::vector<int32_t> tok = random_ids(B * T, kVocab, 5), tgt = random_ids(B * T, kVocab, 6);
  std::vector<WidthCase> cases = width_cases();
  cases.push_back({"hidden_lowrank", with_ffn(cases[4].target, "lowrank"), cases[4].list});
  cases.push_back({"hidden_stem", with_ffn(cases[4].target, "stem"), cases[4].list});
  cases.push_back({"hidden_blockdense", with_ffn(cases[4].target, "blockdense"), cases[4].list});
  cases.push_back({"hidden_blockshuffle", with_ffn(cases[4].target, "blockshuffle"), cases[4].list});
  // model.dim of the block FFNs: the coordinates (and BlockShuffle's middle units) in their blocks.
  cases.push_back({"dim20_blockdense", with_ffn(cases[5].target, "blockdense"), cases[5].list});
  cases.push_back({"dim20_blockshuffle", with_ffn(cases[5].target, "blockshuffle"), cases[5].list});
  for (const WidthCase& c : cases) {
    SCOPED_TRACE(c.name);
    const auto src = source_model(c.target.ffn);
    ModelRun dst(c.target, resolve_dims(c.target, kVocab));
    LearnedGrowth learn(src->model, dst.model, c.list, 3);
    // Away from the start (where many entries are 0 or 1), so every term of the chain rule counts.
    std::vector<double> c0 = learn.coefficients();
    std::mt19937 rng(11);
    std::normal_distribution<double> noise(0.0, 0.05);
    for (double& x : c0) x += noise(rng);
    learn.set_coefficients(c0);
    const std::vector<double> g = learn.gradient(dst.exec, tok.data(), tgt.data(), B, T);
    ASSERT_EQ(g.size(), c0.size());
    auto check = [&](size_t i, const std::string& what) {
      std::vector<double> a = c0;
      a[i] = c0[i] + 3e-3;
      learn.set_coefficients(a);
      const double lp = dst.exec.forward_loss(tok.data(), tgt.data(), B, T).nll / (B * T);
      a[i] = c0[i] - 3e-3;
      learn.set_coefficients(a);
      const double lm = dst.exec.forward_loss(tok.data(), tgt.data(), B, T).nll / (B * T);
      const double fd = (lp - lm) / 6e-3;
      EXPECT_NEAR(g[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << what << " entry " << i;
    };
    // Every matrix: its 3 largest gradients and 3 random entries.
    for (const WidthExpansion::Matrix& m : learn.width().matrices()) {
      const size_t at = learn.alpha_size() + m.offset, n = (size_t)(m.rows * m.cols);
      std::vector<size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                        [&](size_t x, size_t y) { return std::fabs(g[at + x]) > std::fabs(g[at + y]); });
      EXPECT_GT(std::fabs(g[at + order[0]]), 1e-2) << m.name;  // (not vacuous)
      for (int k = 0; k < 6; ++k) check(at + (k < 3 ? order[(size_t)k] : rng() % n), m.name);
    }
    for (size_t i = 0; i < learn.alpha_size(); i += 5) check(i, "alpha");
    learn.set_coefficients(c0);
  }
}

TEST(GrowthLearnWidth, AdamOnTheWholeMapLowersTheLoss) {
  const auto src = source_model();
  const WidthCase c = width_cases()[3];  // wider FFN, more heads, wider model.dim, deeper
  ModelRun dst(c.target, resolve_dims(c.target, kVocab));
  LearnedGrowth learn(src->model, dst.model, c.list, 3);
  const std::vector<double> start = learn.coefficients();
  const int B = 2, T = 9;
  const std::vector<int32_t> tok = random_ids(B * T, kVocab, 3), tgt = random_ids(B * T, kVocab, 4);
  const double first = learn.step(dst.exec, tok.data(), tgt.data(), B, T, 0.02);
  double last = first;
  for (int s = 0; s < 30; ++s) last = learn.step(dst.exec, tok.data(), tgt.data(), B, T, 0.02);
  EXPECT_LT(last, first - 0.05) << "first " << first;
  // Every width matrix moved.
  for (const WidthExpansion::Matrix& m : learn.width().matrices()) {
    double moved = 0;
    for (size_t i = 0; i < (size_t)(m.rows * m.cols); ++i) {
      const size_t k = learn.alpha_size() + m.offset + i;
      moved = std::max(moved, std::fabs(learn.coefficients()[k] - start[k]));
    }
    EXPECT_GT(moved, 1e-3) << m.name;
  }
}

TEST(GrowthLearnWidth, ChecksAcceptSplitsWideningsAndNameTheKeyOfOthers) {
  auto err = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  for (const WidthCase& c : width_cases())
    EXPECT_EQ(err([&] { check_growth(narrow(), c.target, GrowthOperator::learn, c.list); }), "") << c.name;
  ModelConfig v = narrow();
  v.vocab_size = 23;
  EXPECT_NE(err([&] { check_growth(narrow(), v, GrowthOperator::learn, {0, 1}); }).find("model.vocab_size"),
            std::string::npos);
  ModelConfig nohd = tiny(2), more = tiny(2);  // heads grow without model.head_dim
  more.n_heads = 4;
  EXPECT_NE(err([&] { check_growth(nohd, more, GrowthOperator::learn, {0, 1}); }).find("model.head_dim"),
            std::string::npos);
  ModelConfig gqa = narrow(), gqa_t = narrow();
  gqa.n_heads = gqa_t.n_heads = 2;
  gqa.n_kv_heads = 1;
  gqa_t.n_heads = 4;
  gqa_t.n_kv_heads = 2;
  EXPECT_NE(err([&] { check_growth(gqa, gqa_t, GrowthOperator::learn, {0, 1}); }).find("grouped-query"),
            std::string::npos);
  ModelConfig smaller = narrow();
  smaller.dim = 10;
  EXPECT_NE(err([&] { check_growth(narrow(), smaller, GrowthOperator::learn, {0, 1}); }).find("model.dim"),
            std::string::npos);
  // Block FFNs: a wider FFN and more heads, not a wider model.dim; BlockShuffle needs nblocks^2 to
  // divide the FFN widths.
  for (const std::string ffn : {"blockdense", "blockshuffle"})
    for (const WidthCase& c : width_cases())
      EXPECT_EQ(err([&] { check_growth(with_ffn(narrow(), ffn), with_ffn(c.target, ffn), GrowthOperator::learn,
                                       c.list); }).find("model.dim") != std::string::npos,
                grows_dim(c.target))
          << ffn << " " << c.name;
  ModelConfig k4 = with_ffn(narrow(), "blockshuffle"), k4t = with_ffn(width_cases()[0].target, "blockshuffle");
  k4.structured.nblocks = k4t.structured.nblocks = 4;  // 16 divides 32, not 44
  EXPECT_NE(err([&] { check_growth(k4, k4t, GrowthOperator::learn, {0, 1}); }).find("model.structured.nblocks"),
            std::string::npos);
  // G_stack still refuses every widening.
  EXPECT_NE(err([&] { check_growth(narrow(), width_cases()[0].target, GrowthOperator::stack, {0, 1}); })
                .find("model.ffn_dim_multiplier"),
            std::string::npos);
}
