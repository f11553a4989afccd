// Width growth of the block-structured FFNs (lingua/model/growth.h: UnitBlocks) on the CPU:
// BlockDense and BlockShuffle FFNs widened by G_zero and G_split (alone and with depth, with and
// without self-guided guides) compute the source's function; every source unit lands where the
// block-keeping map puts it (source unit b (Hs / k) + r is target unit b (Ht / k) + r), G_zero's new
// units are zero and G_split's copy a source unit of the same blocks with the reading side divided
// by the copies, checked on the dense SwiGLU matrices the FFNs compute (dense_swiglu: the factors
// run on the identity, permutations included); configs that cannot keep the blocks are refused
// naming the key; a wider model.dim keeps every coordinate in its blocks under G_zero and G_split.
// (G_learn's start: test_growth_learn.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <numeric>
#include <random>

#include "lingua/exec/testing.h"
#include "lingua/model/growth.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 17;

// dim 16, FFN 48 units (multiple_of 8; ffn_dim_multiplier 1.5: 64), k = 4 blocks (BlockShuffle:
// k^2 = 16 divides both widths); every layer structured unless `layers` says otherwise.
ModelConfig tiny(const std::string& ffn, int layers = 2, bool guided = false) {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = layers;
  c.n_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = kVocab;
  c.max_seqlen = 24;
  c.seed = 7;
  c.ffn = ffn;
  c.structured.nblocks = 4;
  if (ffn == "blockdense") c.structured.rank = 8;
  std::vector<int> all(layers);
  std::iota(all.begin(), all.end(), 0);
  c.structured.layers = all;
  if (guided) {
    c.structured.self_guided.mode = "fixedstep";
    c.structured.self_guided.max_step = 10;
  }
  return c;
}
ModelConfig wider(ModelConfig c) {
  c.ffn_dim_multiplier = 1.5;
  return c;
}

// Its init plus noise, as training leaves it (every factor and guide far from its init). Guided
// models at step 5 of 10 (alpha about 0.5: the guide and the factors both count).
std::unique_ptr<ModelRun> model(const ModelConfig& c, bool noisy) {
  auto m = std::make_unique<ModelRun>(c, resolve_dims(c, kVocab), Device::cpu, [&](Transformer& t) {
    if (noisy) noisy_init(t, 1234);
  });
  if (c.structured.self_guided.mode != "none") m->model.begin_step(5);
  return m;
}

std::vector<float> logits(ModelRun& m, const std::vector<int32_t>& tok) {
  std::vector<float> out(tok.size() * kVocab);
  m.exec.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

// The grown model's logits and loss are the source's (fp32 rounding). `stacked`: the source is
// first grown in depth by G_stack on `list` to `stacked` (its function: a deeper one), then the
// target is grown from the source with `op` on the same list: it computes the stacked model's function.
void check_function(const ModelConfig& sc, const ModelConfig& tc, const std::vector<int>& list, GrowthOperator op,
                    const ModelConfig* stacked = nullptr) {
  auto src = model(sc, true);
  auto dst = model(tc, false);
  check_growth(sc, tc, op, list);
  grow_model(src->model, dst->model, op, list, 5);
  if (tc.structured.self_guided.mode != "none") {  // (not vacuous: the guides are there)
    int guides = 0;
    for (int id : dst->params().ids()) guides += dst->params().info(id).name.find(".guide.weight") != std::string::npos;
    ASSERT_GT(guides, 0);
  }
  if (stacked) {
    auto deep = model(*stacked, false);
    grow_model(src->model, deep->model, GrowthOperator::stack, list);
    if (stacked->structured.self_guided.mode != "none") deep->model.begin_step(5);
    src = std::move(deep);
  }
  if (tc.structured.self_guided.mode != "none") dst->model.begin_step(5);
  const std::vector<int32_t> tok = random_ints(13, 5, 0, kVocab - 1), tgt = random_ints(13, 6, 0, kVocab - 1);
  const std::vector<float> a = logits(*src, tok), b = logits(*dst, tok);
  double scale = 0;
  for (float v : a) scale = std::max(scale, (double)std::fabs(v));
  ASSERT_GT(scale, 0.1);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(b[i], a[i], 2e-6 * scale) << i;
  const double nll = src->exec.forward_loss(tok.data(), tgt.data(), 1, 13).nll;
  EXPECT_NEAR(dst->exec.forward_loss(tok.data(), tgt.data(), 1, 13).nll, nll, 1e-5 + 1e-6 * nll);  // (fp32 sums)
}

std::string err(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string();
}

}  // namespace

TEST(GrowthBlocks, ZeroAndSplitWidthKeepTheFunction) {
  for (const std::string ffn : {"blockdense", "blockshuffle"})
    for (bool guided : {false, true}) {
      SCOPED_TRACE(ffn + (guided ? " guided" : ""));
      const ModelConfig s = tiny(ffn, 2, guided);
      ASSERT_GT(resolve_dims(wider(s), kVocab).hidden, resolve_dims(s, kVocab).hidden);
      for (GrowthOperator op : {GrowthOperator::zero, GrowthOperator::split}) {
        SCOPED_TRACE(growth_operator_name(op));
        check_function(s, wider(s), {0, 1}, op);
      }
      // With depth: G_split stacks (3 structured layers: the function of G_stack's deeper model, not
      // wider); G_zero adds a new identity layer, dense SwiGLU (a factored w2 cannot be zero),
      // between the grown ones.
      SCOPED_TRACE("with depth");
      const ModelConfig deep = tiny(ffn, 3, guided);
      check_function(s, wider(deep), {0, 1, 1}, GrowthOperator::split, &deep);
      ModelConfig t = wider(tiny(ffn, 3, guided));
      t.structured.layers = std::vector<int>{0, 2};
      check_function(s, t, {0, -1, 1}, GrowthOperator::zero);
    }
}

// On the dense matrices each FFN computes: source unit j = b (Hs / k) + r is target unit
// b (Ht / k) + r (w1's and w3's rows and w2's column equal, w2's divided by the copies under
// G_split); G_zero's new units are zero, G_split's copy a source unit of the same fc2 block (and,
// BlockShuffle, the same fc1 block j % k) and each copy reads 1 / copies of it.
TEST(GrowthBlocks, EveryUnitLandsInItsBlocks) {
  for (const std::string ffn : {"blockdense", "blockshuffle"})
    for (GrowthOperator op : {GrowthOperator::zero, GrowthOperator::split}) {
      SCOPED_TRACE(ffn + " " + growth_operator_name(op));
      const ModelConfig sc = tiny(ffn), tc = wider(tiny(ffn, 3));
      const std::vector<int> list{1, 0, 1};
      auto src = model(sc, true);
      auto dst = model(tc, false);
      grow_model(src->model, dst->model, op, list, 3);
      const int64_t D = 16, k = 4, Hs = 48, Ht = 64, bs = Hs / k, bt = Ht / k;
      const bool shuffle = ffn == "blockshuffle";
      int new_units = 0, shared = 0;
      for (int l = 0; l < 3; ++l) {
        const DenseSwiGLU a = *src->model.block(list[l]).ffn()->dense_swiglu();
        const DenseSwiGLU b = *dst->model.block(l).ffn()->dense_swiglu();
        ASSERT_EQ(a.w1.size(), (size_t)(Hs * D));
        ASSERT_EQ(b.w1.size(), (size_t)(Ht * D));
        double scale = 0;
        for (float x : a.w1) scale = std::max(scale, (double)std::fabs(x));
        const double tol = 1e-5 * scale;
        auto row = [&](const std::vector<float>& w, int64_t j) { return std::vector<float>(w.begin() + j * D, w.begin() + (j + 1) * D); };
        auto col = [&](const std::vector<float>& w, int64_t H, int64_t j) {
          std::vector<float> c((size_t)D);
          for (int64_t i = 0; i < D; ++i) c[(size_t)i] = w[(size_t)(i * H + j)];
          return c;
        };
        auto near = [&](const std::vector<float>& x, const std::vector<float>& y, double f = 1.0) {
          for (size_t i = 0; i < x.size(); ++i)
            if (std::fabs(x[i] - f * y[i]) > tol) return false;
          return true;
        };
        // The target unit each source unit copies (-1: a new zero unit), from the rows found.
        std::vector<int64_t> from((size_t)Ht, -2);
        std::vector<int> copies((size_t)Hs, 0);
        for (int64_t j = 0; j < Ht; ++j) {
          const int64_t blk = j / bt, r = j % bt;
          if (r < bs) {  // a source unit's place
            const int64_t s = blk * bs + r;
            EXPECT_TRUE(near(row(b.w1, j), row(a.w1, s)) && near(row(b.w3, j), row(a.w3, s)))
                << "layer " << l << " unit " << s << " -> " << j;
            from[(size_t)j] = s;
            ++copies[(size_t)s];
            continue;
          }
          ++new_units;
          if (op == GrowthOperator::zero) {
            for (const std::vector<float>& x : {row(b.w1, j), row(b.w3, j), col(b.w2, Ht, j)})
              EXPECT_TRUE(near(x, std::vector<float>((size_t)D, 0.0f))) << "layer " << l << " new unit " << j;
            continue;
          }
          for (int64_t s = 0; s < Hs && from[(size_t)j] < 0; ++s)
            if (near(row(b.w1, j), row(a.w1, s)) && near(row(b.w3, j), row(a.w3, s))) from[(size_t)j] = s;
          const int64_t s = from[(size_t)j];
          ASSERT_GE(s, 0) << "layer " << l << " new unit " << j << " copies no source unit";
          EXPECT_EQ(s / bs, blk) << "layer " << l << " unit " << j << ": a copy from another fc2 block";
          if (shuffle) {
            EXPECT_EQ(s % k, j % k) << "layer " << l << " unit " << j << ": a copy from another fc1 block";
          }
          ++copies[(size_t)s];
        }
        // The reading side: each copy of s holds w2's column s / copies.
        for (int64_t j = 0; j < Ht; ++j) {
          const int64_t s = from[(size_t)j];
          if (s < 0) continue;
          shared += copies[(size_t)s] > 1;
          EXPECT_TRUE(near(col(b.w2, Ht, j), col(a.w2, Hs, s), 1.0 / copies[(size_t)s]))
              << "layer " << l << " unit " << j << " reads source unit " << s << " / " << copies[(size_t)s];
        }
      }
      EXPECT_EQ(new_units, 3 * (int)(Ht - Hs));
      if (op == GrowthOperator::split) {
        EXPECT_GT(shared, 0);
      }
    }
}

TEST(GrowthBlocks, ConfigsThatCannotKeepTheBlocksNameTheKey) {
  // BlockShuffle: k^2 must divide both widths (48 -> 56 with k = 4: 16 does not divide 56).
  const ModelConfig s = tiny("blockshuffle");
  ModelConfig t = s;
  t.ffn_dim_multiplier = 1.3;  // floor(1.3 * 42) = 54 -> 56
  ASSERT_EQ(resolve_dims(t, kVocab).hidden, 56);
  for (GrowthOperator op : {GrowthOperator::zero, GrowthOperator::split, GrowthOperator::learn})
    EXPECT_NE(err([&] { check_growth(s, t, op, {0, 1}); }).find("model.structured.nblocks"), std::string::npos);
  {  // grow_model's own check (on the models' layouts), before anything is written
    auto src = model(s, true);
    auto dst = model(t, false);
    EXPECT_NE(err([&] { grow_model(src->model, dst->model, GrowthOperator::split, {0, 1}); })
                  .find("model.structured.nblocks"),
              std::string::npos);
  }
  ModelConfig k2 = s, k2t = wider(s);
  k2.structured.nblocks = k2t.structured.nblocks = 2;
  EXPECT_EQ(err([&] { check_growth(k2, k2t, GrowthOperator::split, {0, 1}); }), "");
  // BlockShuffle whose FFN is not wider than dim (fc2's middle width is then min(H, dim)): widened
  // with the FFN's units, it keeps the function.
  ModelConfig thin = k2;
  thin.ffn_dim_multiplier = 0.3;  // 12 -> 16 = dim
  ASSERT_EQ(resolve_dims(thin, kVocab).hidden, 16);
  for (GrowthOperator op : {GrowthOperator::zero, GrowthOperator::split}) check_function(thin, k2t, {0, 1}, op);
  // BlockDense: k must divide the target's width (48 -> 58 with multiple_of 2).
  const ModelConfig d = tiny("blockdense");
  ModelConfig dt = d;
  dt.multiple_of = 2;
  dt.ffn_dim_multiplier = 1.4;
  ASSERT_EQ(resolve_dims(dt, kVocab).hidden, 58);
  EXPECT_NE(err([&] { check_growth(d, dt, GrowthOperator::split, {0, 1}); }).find("model.structured.nblocks"),
            std::string::npos);
  EXPECT_EQ(err([&] { check_growth(d, wider(d), GrowthOperator::split, {0, 1}); }), "");
  // A wider model.dim: k (BlockShuffle: k^2) must divide both (G_random's ramp: test_growth_ramp.cpp;
  // G_learn's map: test_growth_learn.cpp).
  for (const std::string ffn : {"blockdense", "blockshuffle"}) {
    ModelConfig a = tiny(ffn), b = tiny(ffn);
    a.head_dim = b.head_dim = 8;
    b.dim = 20;  // (k = 4 divides it; k^2 does not)
    b.multiple_of = 16;
    const std::string e = err([&] { check_growth(a, b, GrowthOperator::split, {0, 1}); });
    if (ffn == "blockshuffle") EXPECT_NE(e.find("model.structured.nblocks"), std::string::npos) << e;
    else EXPECT_EQ(e, "");
    b.dim = 32;
    for (GrowthOperator op : {GrowthOperator::random, GrowthOperator::learn})
      EXPECT_EQ(err([&] { check_growth(a, b, op, {0, 1}); }), "") << ffn;
  }
}

// A wider model.dim (G_zero, G_split) with BlockDense (16 -> 24) and BlockShuffle (16 -> 32) FFNs:
// each coordinate stays in its block of fc1's first factor (contiguous: source coordinate
// b (16 / k) + r is target coordinate b (D / k) + r) and, BlockShuffle, of fc2's last (interleaved,
// its residue mod k), as do BlockShuffle's middle units, which grow with dim: the function is kept,
// with the guides too, with more heads and a new identity layer at once.
TEST(GrowthBlocks, WiderModelDimensionKeepsTheFunction) {
  for (const std::string ffn : {"blockdense", "blockshuffle"})
    for (bool guided : {false, true}) {
      SCOPED_TRACE(ffn + (guided ? " guided" : ""));
      ModelConfig s = tiny(ffn, 2, guided);
      s.head_dim = 8;
      ModelConfig t = s;
      t.dim = ffn == "blockshuffle" ? 32 : 24;
      t.norm_eps = s.norm_eps * 16.0 / t.dim;
      t.multiple_of = 16;  // (BlockShuffle: k^2 = 16 divides the FFN's 96 units)
      for (GrowthOperator op : {GrowthOperator::zero, GrowthOperator::split}) {
        SCOPED_TRACE(growth_operator_name(op));
        check_function(s, t, {0, 1}, op);
      }
      ModelConfig big = t;
      big.n_heads = 3;
      big.n_layers = 3;
      big.structured.layers = std::vector<int>{0, 2};
      check_function(s, big, {0, -1, 1}, GrowthOperator::zero);
      // Where the embedding's columns land (G_zero): in their blocks of D / 4.
      auto src = model(s, true);
      auto dst = model(t, false);
      grow_model(src->model, dst->model, GrowthOperator::zero, {0, 1});
      const std::vector<float> es = src->params().host_param(src->params().index("tok_embeddings.weight")),
                               et = dst->params().host_param(dst->params().index("tok_embeddings.weight"));
      const int D = t.dim, per = D / 4;
      for (int v = 0; v < kVocab; ++v)
        for (int c = 0; c < D; ++c) {
          const int b = c / per, r = c % per;
          ASSERT_EQ(et[v * D + c], r < 4 ? es[v * 16 + b * 4 + r] : 0.0f) << v << " " << c;
        }
    }
}
