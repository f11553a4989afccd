// Model growth (lingua/model/growth.h) on the CPU: G_stack copies every target tensor from its
// source tensor per the stacking list (dense, STEM, LowRank, module tokens); G_zero's new identity
// layers leave the source's function (logits and loss) unchanged, dense and STEM; the errors name
// what does not match; the PRTS planner reproduces the paper's table.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 17;

ModelConfig tiny(int layers, const std::string& ffn = "swiglu") {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = layers;
  c.n_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = kVocab;
  c.max_seqlen = 24;
  c.init_std_factor = "current_depth";
  c.seed = 7;
  c.ffn = ffn;
  if (ffn == "lowrank") c.structured.rank = 4;
  return c;
}

// A source model whose weights are not the target's init (so a copy is visible).
std::unique_ptr<ModelRun> source_model(const ModelConfig& c) {
  auto m = std::make_unique<ModelRun>(c, resolve_dims(c, kVocab));
  m->model.init_weights(1234);
  return m;
}

std::vector<float> logits(ModelRun& m, const std::vector<int32_t>& tok) {
  std::vector<float> out(tok.size() * kVocab);
  m.exec.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

void check_stack(ModelConfig sc, const std::vector<int>& list) {
  ModelConfig tc = sc;
  tc.n_layers = (int)list.size();
  if (sc.stem_layers) {  // the target's STEM layers are the images of the source's
    std::vector<int> t;
    for (size_t i = 0; i < list.size(); ++i)
      for (int l : *sc.stem_layers)
        if (list[i] == l) t.push_back((int)i);
    tc.stem_layers = t;
  }
  if (sc.structured.layers) {
    std::vector<int> t;
    for (size_t i = 0; i < list.size(); ++i)
      for (int l : *sc.structured.layers)
        if (list[i] == l) t.push_back((int)i);
    tc.structured.layers = t;
  }
  auto src = source_model(sc);
  ModelRun dst(tc, resolve_dims(tc, kVocab));
  check_growth(sc, tc, GrowthOperator::stack, list);
  grow_model(src->model, dst.model, GrowthOperator::stack, list);
  const ParamStore &a = src->params(), &b = dst.params();
  int copied = 0;
  for (int id : b.ids()) {
    std::string name = b.info(id).name, from = name;
    // (module_agg=stack: the module stream's entry, layers.0.modules.*, is copied as it is.)
    const bool entry = sc.module_agg == "stack" && name.find(".modules.") != std::string::npos;
    if (name.rfind("layers.", 0) == 0 && !entry) {
      const size_t dot = name.find('.', 7);
      const int layer = std::stoi(name.substr(7, dot - 7));
      from = "layers." + std::to_string(list[layer]) + name.substr(dot);
    }
    EXPECT_EQ(b.host_param(id), a.host_param(a.index(from))) << name << " from " << from;
    ++copied;
  }
  EXPECT_EQ(copied, b.size());
}

}  // namespace

TEST(Growth, StackCopiesEveryTensorPerTheList) {
  check_stack(tiny(2), {0, 1, 0, 1, 0, 1, 0, 1});
  check_stack(tiny(3), {0, 0, 1, 1, 2, 2});
  ModelConfig stem = tiny(2, "stem");
  stem.stem_layers = std::vector<int>{1};
  check_stack(stem, {0, 1, 0, 1});
  ModelConfig lowrank = tiny(2, "lowrank");
  lowrank.structured.layers = std::vector<int>{1};
  check_stack(lowrank, {0, 1, 0, 1});
  ModelConfig modules = tiny(2);
  modules.modules = {"m"};
  modules.module_seq_len = 2;
  modules.module_agg = "sum";
  check_stack(modules, {0, 1, 0, 1});
  // module_agg=stack: only layer 0 holds module parameters, the model's (any layer may come first).
  modules.module_agg = "stack";
  check_stack(modules, {1, 0, 1, 0});
}

TEST(Growth, DefaultListRepeatsTheSourceLayers) {
  EXPECT_EQ(default_stacking_list(3, 12), (std::vector<int>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2}));
  EXPECT_THROW(default_stacking_list(3, 10), Error);
}

// New layers with zero output projections are identity blocks, and split or zero units add what
// the source's added: the grown model's logits and loss are the source's.
void check_zero(ModelConfig sc, ModelConfig tc, const std::vector<int>& list,
                GrowthOperator op = GrowthOperator::zero) {
  auto src = source_model(sc);
  ModelRun dst(tc, resolve_dims(tc, kVocab));
  check_growth(sc, tc, op, list);
  grow_model(src->model, dst.model, op, list, 5);
  auto tok = random_ints(13, 5, 0, kVocab - 1), tgt = random_ints(13, 6, 0, kVocab - 1);
  const std::vector<float> a = logits(*src, tok), b = logits(dst, tok);
  double scale = 0;
  for (float v : a) scale = std::max(scale, (double)std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-6 * scale) << i;
  EXPECT_NEAR(dst.exec.forward_loss(tok.data(), tgt.data(), 1, 13).nll,
              src->exec.forward_loss(tok.data(), tgt.data(), 1, 13).nll, 1e-5);
  // Not vacuous: the new layers' other weights are random, and they learn (their output
  // projections get gradients).
  dst.params().zero_grads();
  dst.exec.forward_backward(tok.data(), tgt.data(), 1, 13, 1.0f);
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i] >= 0) continue;
    const Tensor g = dst.params().grad(dst.params().index("layers." + std::to_string(i) + ".attention.wo.weight"));
    double n = 0;
    for (int64_t k = 0; k < g.numel(); ++k) n += (double)g.f32()[k] * g.f32()[k];
    EXPECT_GT(n, 0) << "layer " << i;
  }
}

TEST(Growth, ZeroDepthKeepsTheFunctionDense) {
  check_zero(tiny(2), tiny(5), {0, -1, 1, -1, -1});
  check_zero(tiny(3), tiny(6), {-1, 0, 1, 2, -1, -1});
  // Module tokens with module_agg=stack: a new block 0 keeps the module rows' entry (the model's).
  ModelConfig s = tiny(2), t = tiny(3);
  for (ModelConfig* c : {&s, &t}) {
    c->modules = {"m"};  // (all run)
    c->module_seq_len = 2;
    c->module_agg = "stack";
  }
  check_zero(s, t, {-1, 0, 1});
  // module_agg=sum: a new identity block's module parameters are zero (they add nothing).
  for (ModelConfig* c : {&s, &t}) c->module_agg = "sum";
  check_zero(s, t, {0, -1, 1});
}

TEST(Growth, ZeroDepthKeepsTheFunctionStem) {
  ModelConfig s = tiny(2, "stem"), t = tiny(4, "stem");
  s.stem_layers = std::vector<int>{1};
  t.stem_layers = std::vector<int>{1, 2};  // layer 2 new: a STEM identity block (its w2 zero)
  check_zero(s, t, {0, 1, -1, -1});
}

// Width: the FFN hidden size grows (32 -> 48 units here); G_split's new units copy source units
// (w2 columns divided by the copy count), G_zero's are zero.
TEST(Growth, SplitAndZeroWidthKeepTheFunction) {
  ModelConfig s = tiny(2), t = tiny(2);
  t.ffn_dim_multiplier = 1.5;
  ASSERT_GT(resolve_dims(t, kVocab).hidden, resolve_dims(s, kVocab).hidden);
  check_zero(s, t, {0, 1}, GrowthOperator::split);
  check_zero(s, t, {0, 1}, GrowthOperator::zero);
  ModelConfig ss = tiny(2, "stem"), ts = tiny(2, "stem");
  ss.stem_layers = std::vector<int>{1};
  ts.stem_layers = std::vector<int>{1};
  ts.ffn_dim_multiplier = 1.5;
  check_zero(ss, ts, {0, 1}, GrowthOperator::split);  // (the STEM table's columns copied like w1's rows)
  ModelConfig tz = ts;
  tz.n_layers = 3;
  check_zero(ss, tz, {0, 1, -1}, GrowthOperator::zero);  // deeper and wider at once
  // LowRank: the hidden axis is the rows of w1.b and w3.b and the columns of w2.a (2-D factors).
  ModelConfig sl = tiny(2, "lowrank"), tl = tiny(2, "lowrank");
  tl.ffn_dim_multiplier = 1.5;
  check_zero(sl, tl, {0, 1}, GrowthOperator::split);
  check_zero(sl, tl, {0, 1}, GrowthOperator::zero);
  // The split units are copies: each new row of w1 equals a source row.
  auto src = source_model(s);
  ModelRun dst(t, resolve_dims(t, kVocab));
  grow_model(src->model, dst.model, GrowthOperator::split, {0, 1}, 5);
  const std::vector<float> a = src->params().host_param(src->params().index("layers.1.feed_forward.w1.weight"));
  const std::vector<float> b = dst.params().host_param(dst.params().index("layers.1.feed_forward.w1.weight"));
  const int64_t D = 16, Hs = (int64_t)a.size() / D, Ht = (int64_t)b.size() / D;
  for (int64_t j = Hs; j < Ht; ++j) {
    bool found = false;
    for (int64_t k = 0; k < Hs && !found; ++k) found = std::equal(b.begin() + j * D, b.begin() + (j + 1) * D, a.begin() + k * D);
    EXPECT_TRUE(found) << "unit " << j;
  }
  // G_stack does not widen.
  EXPECT_THROW(check_growth(s, t, GrowthOperator::stack, {0, 1}), Error);
}

// Heads: 2 -> 3 (G_split: the new head copies a source head, wo's columns of a copied head halved;
// G_zero: a zero head), with head_dim set; also with the FFN widened at once. GQA and an unset
// head_dim are refused.
TEST(Growth, MoreHeadsKeepTheFunction) {
  ModelConfig s = tiny(2), t = tiny(2);
  s.head_dim = t.head_dim = 8;
  t.n_heads = 3;
  {
    SCOPED_TRACE("split");
    check_zero(s, t, {0, 1}, GrowthOperator::split);
  }
  {
    SCOPED_TRACE("zero");
    check_zero(s, t, {0, 1}, GrowthOperator::zero);
  }
  ModelConfig tw = t;
  tw.ffn_dim_multiplier = 1.5;
  tw.n_layers = 3;
  check_zero(s, tw, {0, 1, -1}, GrowthOperator::zero);
  tw.n_layers = 2;
  check_zero(s, tw, {0, 1}, GrowthOperator::split);
  // The new head of G_split is a copy: wq's rows 16..23 equal a source head's.
  auto src = source_model(s);
  ModelRun dst(t, resolve_dims(t, kVocab));
  grow_model(src->model, dst.model, GrowthOperator::split, {0, 1}, 5);
  const std::vector<float> a = src->params().host_param(src->params().index("layers.0.attention.wq.weight"));
  const std::vector<float> b = dst.params().host_param(dst.params().index("layers.0.attention.wq.weight"));
  ASSERT_EQ(b.size(), 3 * 8 * 16u);
  const bool copy0 = std::equal(b.begin() + 256, b.end(), a.begin()), copy1 = std::equal(b.begin() + 256, b.end(), a.begin() + 128);
  EXPECT_TRUE(copy0 || copy1);
  auto err = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ModelConfig nohd = t;
  nohd.head_dim.reset();
  ModelConfig nohs = s;
  nohs.head_dim.reset();
  EXPECT_NE(err([&] { check_growth(nohs, nohd, GrowthOperator::split, {0, 1}); }).find("model.head_dim"),
            std::string::npos);
  ModelConfig gs = s, gt = t;
  gs.n_heads = 2, gt.n_heads = 4, gs.n_kv_heads = 1, gt.n_kv_heads = 2;
  EXPECT_NE(err([&] { check_growth(gs, gt, GrowthOperator::split, {0, 1}); }).find("grouped-query"), std::string::npos);
  EXPECT_THROW(check_growth(s, t, GrowthOperator::stack, {0, 1}), Error);
}

// The model dimension (G_zero): 16 -> 24, the new coordinates of the residual stream zero, the
// norms' weights scaled by sqrt(16 / 24). Exact when the target's norm epsilon is scaled alike
// (the RMS of the wider stream is sqrt(16 / 24) of the source's); with the same epsilon, up to the
// epsilon's share of the RMS. Also deeper, wider FFN and more heads at once; G_stack refuses it.
// (dim 16 -> 24, head_dim 8 kept, the target's norm epsilon scaled by 16 / 24.)
std::pair<ModelConfig, ModelConfig> wider_dim() {
  ModelConfig s = tiny(2), t = tiny(2);
  s.head_dim = t.head_dim = 8;
  t.dim = 24;
  t.norm_eps = s.norm_eps * 16.0 / 24.0;
  return {s, t};
}

TEST(Growth, WiderModelDimensionKeepsTheFunction) {
  const auto [s, t] = wider_dim();
  check_zero(s, t, {0, 1}, GrowthOperator::zero);
  ModelConfig big = t;
  big.n_layers = 3;
  big.n_heads = 3;
  big.ffn_dim_multiplier = 1.5;
  check_zero(s, big, {0, -1, 1}, GrowthOperator::zero);
  // The same epsilon: close, not exact.
  ModelConfig same_eps = t;
  same_eps.norm_eps = s.norm_eps;
  auto src = source_model(s);
  ModelRun dst(same_eps, resolve_dims(same_eps, kVocab));
  grow_model(src->model, dst.model, GrowthOperator::zero, {0, 1});
  auto tok = random_ints(13, 5, 0, kVocab - 1);
  const std::vector<float> a = logits(*src, tok), b = logits(dst, tok);
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, (double)std::fabs(a[i]));
    diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
  }
  EXPECT_LT(diff, 1e-3 * scale);
  // The embedding's new columns are zero, its old ones the source's.
  const std::vector<float> e = dst.params().host_param(dst.params().index("tok_embeddings.weight"));
  const std::vector<float> es = src->params().host_param(src->params().index("tok_embeddings.weight"));
  for (int v = 0; v < kVocab; ++v)
    for (int d = 0; d < 24; ++d) ASSERT_EQ(e[v * 24 + d], d < 16 ? es[v * 16 + d] : 0.0f);
  EXPECT_THROW(check_growth(s, t, GrowthOperator::stack, {0, 1}), Error);
  ModelConfig nohd = t, nohs = s;
  nohd.head_dim.reset(), nohs.head_dim.reset();
  EXPECT_THROW(check_growth(nohs, nohd, GrowthOperator::zero, {0, 1}), Error);
}

// G_split of the model dimension (16 -> 24): each new coordinate copies a random source coordinate,
// and every copy of a coordinate c times over holds 1/sqrt(c) of it, on the writers' and the
// readers' side alike: the stream's sum of squares is the source's, so with model.norm_eps scaled
// by 16 / 24 the function is kept exactly; also deeper, with more heads and a wider FFN at once.
TEST(Growth, SplitModelDimensionKeepsTheFunction) {
  const auto [s, t] = wider_dim();
  check_zero(s, t, {0, 1}, GrowthOperator::split);
  ModelConfig big = t;
  big.n_heads = 3;
  big.ffn_dim_multiplier = 1.5;
  check_zero(s, big, {0, 1}, GrowthOperator::split);
  // Every new embedding column is a source column over sqrt(2) (or sqrt(c)), and so is the copied one.
  auto src = source_model(s);
  ModelRun dst(t, resolve_dims(t, kVocab));
  grow_model(src->model, dst.model, GrowthOperator::split, {0, 1}, 5);
  const std::vector<float> e = dst.params().host_param(dst.params().index("tok_embeddings.weight"));
  const std::vector<float> es = src->params().host_param(src->params().index("tok_embeddings.weight"));
  auto same_column = [&](int d, int k) {
    for (int v = 0; v < kVocab; ++v)
      if (e[v * 24 + d] != e[v * 24 + k]) return false;
    return true;
  };
  for (int d = 16; d < 24; ++d) {
    int from = -1;
    for (int k = 0; k < 16 && from < 0; ++k)
      if (same_column(d, k)) from = k;
    ASSERT_GE(from, 0) << "coordinate " << d << " copies no source coordinate";
    const double ratio = e[from] / es[from];  // 1 / sqrt(copies), copies >= 2
    EXPECT_LE(ratio, 1.0 / std::sqrt(2.0) + 1e-6) << d;
    for (int v = 0; v < kVocab; ++v) EXPECT_NEAR(e[v * 24 + from], es[v * 16 + from] * ratio, 1e-6) << v;
  }
  // (Carrying moments across it: tests/test_growth_moments.cpp.)
}

// growth.carry_moments: the moments follow the weights; a G_split unit with c copies keeps its
// input-side moments (w2's columns: each copy's gradient there is the source's) and divides its
// output-side ones (w1's rows: 1/c of the gradient) by c and c^2; new layers start at zero.
TEST(Growth, MomentsFollowTheWeights) {
  auto fake = [](const ParamStore& ps) {
    return [&ps](int sid) {
      Moments mv{ps.host_param(sid), ps.host_param(sid)};
      for (float& x : mv.v) x = x * x + 0.5f;
      return mv;
    };
  };
  auto grown_moments = [&](ModelRun& src, ModelRun& dst, GrowthOperator op, const std::vector<int>& list) {
    std::map<std::string, Moments> out;
    grow_moments(src.model, dst.model, op, list, 5, fake(src.params()),
                 [&](int id, const Moments& mv) { out[dst.params().info(id).name] = mv; });
    EXPECT_EQ((int)out.size(), dst.params().size());
    return out;
  };
  {  // G_stack and G_zero in depth
    auto src = source_model(tiny(2));
    ModelRun dst(tiny(4), resolve_dims(tiny(4), kVocab));
    auto out = grown_moments(*src, dst, GrowthOperator::zero, {0, -1, 1, -1});
    const Moments a = fake(src->params())(src->params().index("layers.1.attention.wq.weight"));
    EXPECT_EQ(out["layers.2.attention.wq.weight"].m, a.m);
    EXPECT_EQ(out["layers.2.attention.wq.weight"].v, a.v);
    for (float x : out["layers.3.feed_forward.w1.weight"].v) ASSERT_EQ(x, 0.0f);
    EXPECT_EQ(out["tok_embeddings.weight"].m, src->params().host_param(src->params().index("tok_embeddings.weight")));
  }
  {  // G_zero in the model dimension (16 -> 24): new entries 0, a norm's moments / c and / c^2
    ModelConfig s = tiny(2), t = tiny(2);
    s.head_dim = t.head_dim = 8;
    t.dim = 24;
    auto src = source_model(s);
    ModelRun dst(t, resolve_dims(t, kVocab));
    auto out = grown_moments(*src, dst, GrowthOperator::zero, {0, 1});
    const double c = std::sqrt(16.0 / 24.0);
    const Moments n = fake(src->params())(src->params().index("norm.weight"));
    const Moments& g = out["norm.weight"];
    ASSERT_EQ(g.m.size(), 24u);
    for (int i = 0; i < 24; ++i) {
      EXPECT_FLOAT_EQ(g.m[i], i < 16 ? (float)(n.m[i] / c) : 0.0f) << i;
      EXPECT_FLOAT_EQ(g.v[i], i < 16 ? (float)(n.v[i] / (c * c)) : 0.0f) << i;
    }
    const Moments e = fake(src->params())(src->params().index("tok_embeddings.weight"));  // [V, 16] -> [V, 24]
    const Moments& ge = out["tok_embeddings.weight"];
    for (int64_t r = 0; r < kVocab; ++r)
      for (int64_t k = 0; k < 24; ++k) EXPECT_EQ(ge.v[r * 24 + k], k < 16 ? e.v[r * 16 + k] : 0.0f);
  }
  ModelConfig s = tiny(2), t = tiny(2);
  t.ffn_dim_multiplier = 1.5;
  auto src = source_model(s);
  ModelRun dst(t, resolve_dims(t, kVocab));
  grow_model(src->model, dst.model, GrowthOperator::split, {0, 1}, 5);
  auto out = grown_moments(*src, dst, GrowthOperator::split, {0, 1});
  const ParamStore &a = src->params(), &b = dst.params();
  const std::vector<float> w1s = a.host_param(a.index("layers.0.feed_forward.w1.weight"));
  const std::vector<float> w1t = b.host_param(b.index("layers.0.feed_forward.w1.weight"));
  const int64_t D = 16, Hs = (int64_t)w1s.size() / D, Ht = (int64_t)w1t.size() / D;
  // Which source unit each target unit copies (w1's rows are copied unchanged), and the copy counts.
  std::vector<int64_t> from(Ht, -1);
  std::vector<int> copies(Hs, 0);
  for (int64_t j = 0; j < Ht; ++j) {
    for (int64_t k = 0; k < Hs && from[j] < 0; ++k)
      if (std::equal(w1t.begin() + j * D, w1t.begin() + (j + 1) * D, w1s.begin() + k * D)) from[j] = k;
    ASSERT_GE(from[j], 0) << j;
    ++copies[from[j]];
  }
  const Moments w1 = fake(a)(a.index("layers.0.feed_forward.w1.weight"));
  const Moments w2 = fake(a)(a.index("layers.0.feed_forward.w2.weight"));
  const Moments &g1 = out["layers.0.feed_forward.w1.weight"], &g2 = out["layers.0.feed_forward.w2.weight"];
  int divided = 0;
  for (int64_t j = 0; j < Ht; ++j) {
    const float c = (float)copies[from[j]];
    divided += c > 1;
    for (int64_t d = 0; d < D; ++d) {
      EXPECT_FLOAT_EQ(g1.m[j * D + d], w1.m[from[j] * D + d] / c);
      EXPECT_FLOAT_EQ(g1.v[j * D + d], w1.v[from[j] * D + d] / (c * c));
      EXPECT_EQ(g2.m[d * Ht + j], w2.m[d * Hs + from[j]]);  // w2 [dim, hidden]: the input side
      EXPECT_EQ(g2.v[d * Ht + j], w2.v[d * Hs + from[j]]);
    }
  }
  EXPECT_GT(divided, 0);
}

TEST(Growth, ErrorsNameWhatDoesNotMatch) {
  auto err = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ModelConfig s = tiny(2), t = tiny(4);
  t.dim = 32;
  EXPECT_NE(err([&] { check_growth(s, t, GrowthOperator::stack, {0, 1, 0, 1}); }).find("'model.dim'"),
            std::string::npos);
  t = tiny(4);
  EXPECT_NE(err([&] { check_growth(s, t, GrowthOperator::stack, {0, 1, 0}); }).find("3 entries"), std::string::npos);
  EXPECT_NE(err([&] { check_growth(s, t, GrowthOperator::stack, {0, 1, 2, 1}); }).find("entry 2 is 2"),
            std::string::npos);
  EXPECT_NE(err([&] { check_growth(s, t, GrowthOperator::stack, {0, -1, 0, 1}); }).find("entry 1 is -1"),
            std::string::npos);
  // A STEM target layer over a dense source layer.
  ModelConfig ss = tiny(2, "stem"), ts = tiny(4, "stem");
  ss.stem_layers = std::vector<int>{1};
  ts.stem_layers = std::vector<int>{1, 2};
  auto src = source_model(ss);
  ModelRun dst(ts, resolve_dims(ts, kVocab));
  EXPECT_NE(err([&] { grow_model(src->model, dst.model, GrowthOperator::stack, {0, 1, 0, 1}); })
                .find("target layer 2 does not match source layer 0"),
            std::string::npos);
  // G_zero: a factored output projection, and new layers' module rows (module_agg=avg), are refused.
  ModelConfig sl = tiny(2, "lowrank"), tl = tiny(3, "lowrank");
  auto srcl = source_model(sl);
  ModelRun dstl(tl, resolve_dims(tl, kVocab));
  EXPECT_NE(err([&] { grow_model(srcl->model, dstl.model, GrowthOperator::zero, {0, 1, -1}); }).find("product of factors"),
            std::string::npos);
  ModelConfig sm = tiny(2), tm = tiny(3);
  sm.modules = tm.modules = {"m"};
  sm.module_seq_len = tm.module_seq_len = 2;
  sm.module_agg = tm.module_agg = "avg";
  EXPECT_NE(err([&] { check_growth(sm, tm, GrowthOperator::zero, {0, 1, -1}); }).find("module tokens"),
            std::string::npos);
  ModelConfig wm = sm;  // (in width alone, every module_agg)
  wm.ffn_dim_multiplier = 1.5;
  EXPECT_EQ(err([&] { check_growth(sm, wm, GrowthOperator::random, {0, 1}); }), "");
}

// PRTS's table (its README): Llama3-8B at 15T tokens 6.58B, Llama2-7B / 13B / 70B at 2T tokens
// 11.11B, 15.84B, 42.48B.
TEST(GrowthPlan, ReproducesThePrtsTable) {
  EXPECT_NEAR(prts_growth_tokens(8e9, 15e12) / 1e9, 6.58, 0.01);
  EXPECT_NEAR(prts_growth_tokens(7e9, 2e12) / 1e9, 11.11, 0.01);
  EXPECT_NEAR(prts_growth_tokens(13e9, 2e12) / 1e9, 15.84, 0.01);
  EXPECT_NEAR(prts_growth_tokens(70e9, 2e12) / 1e9, 42.48, 0.01);
  const GrowthPlan p = plan_growth(7e9, 2e12, 32, 1.75e9);
  EXPECT_EQ(p.g, 4);
  EXPECT_EQ(p.source_layers, 8);
  EXPECT_NEAR(p.flops_saved_fraction(), (7e9 - 1.75e9) * p.d / (7e9 * 2e12), 1e-12);
}
