// The structured FFN layers LowRank, BlockDense and BlockShuffle (lingua/model/ffn/lowrank.cpp,
// blockdense.cpp, blockshuffle.cpp) and what they share through StructuredFfn:
//  - finite-difference gradients of every parameter of a tiny model, each init and post-init;
//  - the dense SwiGLU each layer equals (dense_swiglu: export, pre-merge) is what it computes, and
//    BlockShuffle's matrix follows SPEC §3's permutations read literally;
//  - LowRank at full rank with identity factors is the dense layer; its svd post-init factors the
//    dense init; BlockDense with one block is LowRank, bit for bit; ortho gives orthogonal blocks;
//  - parameter counts and FLOPs count the factors; config errors name the key;
//  - training composes: bitwise resume, checkpoints that generation (KV cache) and evaluation load;
//  - on a GPU: the CPU's loss curve, and CUDA-graph steps equal eager steps bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/core/cuda.h"
#include "lingua/eval/validation.h"
#include "lingua/exec/executor.h"
#include "lingua/exec/testing.h"
#include "lingua/model/transformer.h"
#include "lingua/ops/testing.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using lingua::test_util::random_ids;
namespace fs = std::filesystem;

namespace {

// dim 12, hidden 32 (multiple_of 4): 4 blocks divide both.
ModelConfig tiny(const std::string& ffn, int nblocks, int rank = 0) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = 2;
  c.n_heads = 3;
  c.multiple_of = 4;
  c.vocab_size = 13;
  c.max_seqlen = 16;
  c.seed = 5;
  c.ffn = ffn;
  c.structured.nblocks = nblocks;
  c.structured.rank = rank;
  return c;
}

bool is_factor(const std::string& name) {
  for (const char* f : {".blocks.weight", ".dense.weight", ".blocks1.weight", ".blocks2.weight", ".a.weight", ".b.weight"})
    if (name.find(f) != std::string::npos) return true;
  return false;
}

// factors: factor parameters per structured layer (lowrank: w13.a, w1.b, w3.b, w2.a, w2.b).
void check_gradients(const ModelConfig& cfg, int structured_layers, int factors_per_layer = 4) {
  ModelDims d = resolve_dims(cfg, cfg.vocab_size);
  Transformer m(cfg, d);
  Executor ex(m);
  const int B = 2, T = 5;
  auto tok = random_ids(B * T, d.vocab, 1), tgt = random_ids(B * T, d.vocab, 2);
  const float scale = 0.1f;
  m.params().zero_grads();
  ex.forward_backward(tok.data(), tgt.data(), B, T, scale);
  const std::vector<float> grad = m.params().host_grads();
  std::mt19937 g(3);
  int factors = 0;
  for (int id : m.params().ids()) {
    const ParamInfo& p = m.params().info(id);
    factors += is_factor(p.name);
    for (int k = 0; k < 6; ++k) {
      const int64_t e = (int64_t)(g() % p.numel), i = p.grad_offset + e;
      const double fd = test_util::finite_difference(ex, id, e, tok, tgt, B, T, scale);
      EXPECT_NEAR(grad[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << cfg.ffn << " " << p.name << " entry " << e;
    }
  }
  EXPECT_EQ(factors, factors_per_layer * structured_layers) << cfg.ffn;
}

// Logits of `m` and of a dense SwiGLU model with the same other weights and, in each structured
// layer, the weights dense_swiglu() reports.
void expect_dense_equivalent(const ModelConfig& sc) {
  ModelConfig dc = sc;
  dc.ffn = "swiglu";
  const ModelDims d = resolve_dims(dc, dc.vocab_size);
  Transformer dense(dc, d), st(sc, resolve_dims(sc, sc.vocab_size));
  ParamStore &ds = dense.params(), &ss = st.params();
  int merged = 0;
  for (int l = 0; l < d.n_layers; ++l) {
    const std::optional<DenseSwiGLU> w = st.block(l).ffn()->dense_swiglu();
    if (!w) continue;
    ++merged;
    const std::string f = "layers." + std::to_string(l) + ".feed_forward.";
    for (auto [name, v] : {std::pair{"w1.weight", &w->w1}, {"w3.weight", &w->w3}, {"w2.weight", &w->w2}}) {
      const int id = ds.index(f + name);
      ASSERT_EQ((int64_t)v->size(), ds.info(id).numel) << name;
      ds.set_param(id, v->data());
    }
  }
  EXPECT_EQ(merged, d.n_layers - 1) << "layer 0 stays dense by default";
  for (int id : ss.ids())  // every other parameter is the same (drawn by name from the seed)
    if (!is_factor(ss.info(id).name))
      ASSERT_EQ(ss.host_param(id), ds.host_param(ds.index(ss.info(id).name))) << ss.info(id).name;
  Executor de(dense), se(st);
  const int T = 7;
  const auto tok = random_ids(T, d.vocab, 9);
  std::vector<float> a((size_t)(T * d.vocab)), b(a.size());
  de.forward_logits(tok.data(), T, a.data());
  se.forward_logits(tok.data(), T, b.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-5 * (1 + std::fabs(a[i]))) << sc.ffn << " " << i;
}

std::vector<float> host(const Transformer& m, const std::string& name) {
  return m.params().host_param(m.params().index(name));
}

}  // namespace

TEST(StructuredFfn, GradientsMatchFiniteDifferences) {
  check_gradients(tiny("lowrank", 0, 3), 1, 5);
  ModelConfig lx = tiny("lowrank", 0, 5);
  lx.structured.init = "xavier";
  lx.structured.layers = std::vector<int>{0, 1};
  check_gradients(lx, 2, 5);
  check_gradients(tiny("blockdense", 4, 8), 1);
  check_gradients(tiny("blockshuffle", 4), 1);
  for (const char* ffn : {"blockdense", "blockshuffle"}) {
    ModelConfig x = tiny(ffn, 2, 6);
    x.structured.init = "xavier";
    x.structured.post_init = "ortho";
    x.structured.layers = std::vector<int>{0, 1};
    check_gradients(x, 2);
  }
}

TEST(StructuredFfn, DenseSwiGLUIsWhatTheLayerComputes) {
  expect_dense_equivalent(tiny("lowrank", 0, 5));
  expect_dense_equivalent(tiny("blockdense", 4, 8));
  expect_dense_equivalent(tiny("blockshuffle", 4));
  expect_dense_equivalent(tiny("blockshuffle", 2));
}

// SPEC §3 read literally on one vector: W1 blocks on x, the intermediate [k, q] read as [q, k]
// transposed, W2 blocks, the output re-interleaved the same way; against dense_swiglu's w2.
TEST(StructuredFfn, BlockShuffleFollowsTheSpecPermutations) {
  for (int k : {2, 4}) {
    const ModelConfig c = tiny("blockshuffle", k);
    Transformer m(c, resolve_dims(c, c.vocab_size));
    const std::string f = "layers.1.feed_forward.";
    const std::vector<float> w1 = host(m, f + "w2.blocks1.weight"), w2 = host(m, f + "w2.blocks2.weight");
    const int64_t in = m.dims().hidden, out = m.dims().dim;  // fc2: in > out, so q = out / k
    const int64_t p = in / k, q = out / k, s = out / k;
    const std::vector<float> x = test_util::random_vector(in, 7);
    std::vector<double> z(k * q), u(k * q), v(k * s), y(out);
    for (int64_t c2 = 0; c2 < k; ++c2)  // z[c2*q + r] = sum_i W1[c2, r, i] x[c2*p + i]
      for (int64_t r = 0; r < q; ++r)
        for (int64_t i = 0; i < p; ++i) z[c2 * q + r] += (double)w1[(c2 * q + r) * p + i] * x[c2 * p + i];
    for (int64_t c2 = 0; c2 < k; ++c2)  // block c2 of stage 2 takes elements a*k + c2
      for (int64_t a = 0; a < q; ++a) u[c2 * q + a] = z[a * k + c2];
    for (int64_t c2 = 0; c2 < k; ++c2)
      for (int64_t o = 0; o < s; ++o)
        for (int64_t a = 0; a < q; ++a) v[c2 * s + o] += (double)w2[(c2 * s + o) * q + a] * u[c2 * q + a];
    for (int64_t c2 = 0; c2 < k; ++c2)  // output element a*k + c2 is element a of block c2
      for (int64_t a = 0; a < s; ++a) y[a * k + c2] = v[c2 * s + a];
    const std::vector<float> dense = m.block(1).ffn()->dense_swiglu()->w2;
    for (int64_t o = 0; o < out; ++o) {
      double want = 0;
      for (int64_t i = 0; i < in; ++i) want += (double)dense[o * in + i] * x[i];
      EXPECT_NEAR(y[o], want, 1e-6) << "k " << k << " output " << o;
    }
  }
}

// With one block, BlockDense's factors are LowRank's (A = the single block, B = w1.b; w3.b): the
// same products in the same order, so the logits agree to the bit.
TEST(StructuredFfn, BlockDenseWithOneBlockIsLowRank) {
  const ModelConfig bc = tiny("blockdense", 1, 5), lc = tiny("lowrank", 0, 5);
  Transformer bd(bc, resolve_dims(bc, bc.vocab_size)), lr(lc, resolve_dims(lc, lc.vocab_size));
  ParamStore& ls = lr.params();
  const std::string f = "layers.1.feed_forward.";
  auto set = [&](const std::string& name, std::vector<float> v, const std::string& more = "") {
    if (!more.empty()) {
      const std::vector<float> m = host(bd, f + more);
      v.insert(v.end(), m.begin(), m.end());
    }
    ASSERT_EQ((int64_t)v.size(), ls.info(ls.index(f + name)).numel) << name;
    ls.set_param(ls.index(f + name), v.data());
  };
  set("w13.a.weight", host(bd, f + "w13.blocks.weight"));
  std::vector<float> b13 = host(bd, f + "w13.dense.weight");
  const size_t half = b13.size() / 2;
  set("w1.b.weight", std::vector<float>(b13.begin(), b13.begin() + half));
  set("w3.b.weight", std::vector<float>(b13.begin() + half, b13.end()));
  set("w2.a.weight", host(bd, f + "w2.blocks.weight"));
  set("w2.b.weight", host(bd, f + "w2.dense.weight"));
  Executor be(bd), le(lr);
  const int T = 9;
  const auto tok = random_ids(T, 13, 4);
  std::vector<float> a((size_t)(T * 13)), b(a.size());
  be.forward_logits(tok.data(), T, a.data());
  le.forward_logits(tok.data(), T, b.data());
  EXPECT_EQ(a, b);
}

// ortho: every block (and BlockDense's dense factor) has all singular values 1: W W^T = I when it
// is wide, W^T W = I when tall.
TEST(StructuredFfn, OrthoPostInitGivesOrthogonalBlocks) {
  for (const char* ffn : {"blockdense", "blockshuffle"}) {
    ModelConfig c = tiny(ffn, 2, 6);
    c.structured.post_init = "ortho";
    Transformer m(c, resolve_dims(c, c.vocab_size));
    int checked = 0;
    for (int id : m.params().ids()) {
      const ParamInfo& p = m.params().info(id);
      if (p.name.find(".blocks") == std::string::npos && p.name.find(".dense.") == std::string::npos) continue;
      const std::vector<float> w = m.params().host_param(id);
      const int64_t rows = p.shape[p.shape.size() - 2], cols = p.shape.back(), blocks = p.numel / (rows * cols);
      const bool wide = rows <= cols;
      for (int64_t b = 0; b < blocks; ++b) {
        const float* W = w.data() + b * rows * cols;
        const int64_t n = wide ? rows : cols;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double g = 0;
            for (int64_t t = 0; t < (wide ? cols : rows); ++t)
              g += wide ? (double)W[i * cols + t] * W[j * cols + t] : (double)W[t * cols + i] * W[t * cols + j];
            ASSERT_NEAR(g, i == j ? 1.0 : 0.0, 1e-5) << p.name << " block " << b << " (" << i << ", " << j << ")";
          }
      }
      ++checked;
    }
    EXPECT_EQ(checked, 4) << ffn;
  }
}

TEST(StructuredFfn, CountsTheFactorsNotADenseLayer) {
  const ModelConfig dc = tiny("swiglu", 0);
  const ModelDims d = resolve_dims(dc, dc.vocab_size);
  Transformer dense(dc, d);
  const int64_t D = d.dim, H = d.hidden, k = 4, r = 8;
  const int64_t dense_ffn = 3 * D * H;
  // LowRank: w13.a [r, D], w1.b and w3.b [H, r], w2.a [r, H], w2.b [D, r].
  const int64_t lr_ffn = r * D + 2 * H * r + r * H + D * r;
  // BlockDense: fc1 blocks [k, r/k, D/k] + dense [2H, r]; fc2 blocks [k, r/k, H/k] + dense [D, r].
  const int64_t bd_ffn = r * (D / k) + 2 * H * r + r * (H / k) + D * r;
  // BlockShuffle: fc1 (D <= 2H): [k, D/k, D/k] + [k, 2H/k, D/k]; fc2 (H > D): [k, D/k, H/k] + [k, D/k, D/k].
  const int64_t bs_ffn = D * D / k + 2 * H * D / k + D * H / k + D * D / k;
  for (auto [ffn, n] : {std::pair{"lowrank", lr_ffn}, {"blockdense", bd_ffn}, {"blockshuffle", bs_ffn}}) {
    const ModelConfig c = tiny(ffn, (int)k, (int)r);
    Transformer m(c, resolve_dims(c, c.vocab_size));
    EXPECT_EQ(dense.param_counts().total - m.param_counts().total, dense_ffn - n) << ffn;
    EXPECT_EQ(dense.param_counts().active_non_embedding - m.param_counts().active_non_embedding, dense_ffn - n);
    EXPECT_DOUBLE_EQ(dense.flops_per_token(8) - m.flops_per_token(8), 6.0 * (dense_ffn - n)) << ffn;
    EXPECT_EQ(m.describe_ffn(), std::string(ffn) + " on layers 1; swiglu on layers 0");
  }
}

TEST(StructuredFfn, ConfigErrorsNameTheKey) {
  auto error = [](const ModelConfig& c) {
    try {
      Transformer(c, resolve_dims(c, c.vocab_size));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error(tiny("lowrank", 0, 0)).find("model.structured.rank"), std::string::npos);
  ModelConfig layers = tiny("lowrank", 0, 2);
  layers.structured.layers = std::vector<int>{2};
  EXPECT_NE(error(layers).find("model.structured.layers"), std::string::npos);
  EXPECT_NE(error(tiny("blockshuffle", 0)).find("model.structured.nblocks"), std::string::npos);
  EXPECT_NE(error(tiny("blockdense", 4, 0)).find("model.structured.rank"), std::string::npos);
  EXPECT_NE(error(tiny("blockshuffle", 5)).find("model.structured.nblocks' is 5"), std::string::npos);
  EXPECT_NE(error(tiny("blockdense", 4, 6)).find("model.structured.rank (6)"), std::string::npos);
  ModelConfig svd = tiny("blockshuffle", 2);
  svd.structured.post_init = "svd";
  EXPECT_NE(error(svd).find("model.structured.post_init"), std::string::npos);
  ModelConfig ortho = tiny("lowrank", 0, 3);
  ortho.structured.post_init = "ortho";
  EXPECT_NE(error(ortho).find("model.structured.post_init"), std::string::npos);
  EXPECT_EQ(error(tiny("swiglu", 5, 6)), "") << "the keys matter only for the structured variants";
}

TEST(LowRank, FullRankWithIdentityFactorsIsTheDenseLayer) {
  const ModelConfig dc = tiny("swiglu", 0, 0), lc = tiny("lowrank", 0, 12);  // rank = dim
  const ModelDims d = resolve_dims(dc, dc.vocab_size);
  Transformer dense(dc, d), low(lc, resolve_dims(lc, lc.vocab_size));
  ParamStore &ds = dense.params(), &ls = low.params();
  auto values = [&](const std::string& name) { return ds.host_param(ds.index(name)); };
  auto set = [&](const std::string& name, const std::vector<float>& v) {
    const int id = ls.index(name);
    ASSERT_EQ((int64_t)v.size(), ls.info(id).numel) << name;
    std::copy(v.begin(), v.end(), ls.param(id).f32());
  };
  const int64_t D = d.dim;
  std::vector<float> eye((size_t)(D * D), 0.0f);
  for (int64_t i = 0; i < D; ++i) eye[(size_t)(i * D + i)] = 1.0f;
  const std::string f = "layers.1.feed_forward.";
  set(f + "w13.a.weight", eye);
  set(f + "w1.b.weight", values(f + "w1.weight"));
  set(f + "w3.b.weight", values(f + "w3.weight"));
  set(f + "w2.a.weight", values(f + "w2.weight"));
  set(f + "w2.b.weight", eye);
  for (int id : ls.ids())  // every other parameter is the same (drawn by name from the seed)
    if (ls.info(id).name.find(".a.weight") == std::string::npos && ls.info(id).name.find(".b.weight") == std::string::npos)
      EXPECT_EQ(ls.host_param(id), values(ls.info(id).name)) << ls.info(id).name;
  Executor de(dense), le(low);
  const int T = 7;
  const auto tok = random_ids(T, d.vocab, 9);
  std::vector<float> a((size_t)(T * d.vocab)), b(a.size());
  de.forward_logits(tok.data(), T, a.data());
  le.forward_logits(tok.data(), T, b.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-5 * (1 + std::fabs(a[i]))) << i;
}

// post_init svd: B A is the dense init's best rank-r approximation: exact at full rank; at rank r the
// residual W - B A is orthogonal to B's columns and A's rows and B A holds at least r/k of W's energy.
TEST(LowRank, SvdPostInitFactorsTheDenseInit) {
  const ModelConfig dc = tiny("swiglu", 0, 0);
  const ModelDims d = resolve_dims(dc, dc.vocab_size);
  Transformer dense(dc, d);
  auto dense_w = [&](const std::string& n) { return dense.params().host_param(dense.params().index(n)); };
  const std::string f = "layers.1.feed_forward.";
  std::vector<float> fc1 = dense_w(f + "w1.weight");
  const std::vector<float> w3 = dense_w(f + "w3.weight"), fc2 = dense_w(f + "w2.weight");
  fc1.insert(fc1.end(), w3.begin(), w3.end());
  const int64_t D = d.dim, H = d.hidden;
  for (int r : {12, 4}) {  // 12 = dim: full rank for both linears
    SCOPED_TRACE("rank " + std::to_string(r));
    ModelConfig lc = tiny("lowrank", 0, r);
    lc.structured.post_init = "svd";
    Transformer low(lc, resolve_dims(lc, lc.vocab_size));
    auto w = [&](const std::string& n) { return low.params().host_param(low.params().index(f + n)); };
    std::vector<float> b1 = w("w1.b.weight");
    const std::vector<float> b3 = w("w3.b.weight");
    b1.insert(b1.end(), b3.begin(), b3.end());
    struct Case {
      const std::vector<float>& W;
      std::vector<float> A, B;
      int64_t out, in;
    };
    for (const Case& c : {Case{fc1, w("w13.a.weight"), b1, 2 * H, D}, Case{fc2, w("w2.a.weight"), w("w2.b.weight"), D, H}}) {
      // P = B A, R = W - P
      std::vector<double> R((size_t)(c.out * c.in));
      double energy = 0, total = 0, err = 0;
      for (int64_t o = 0; o < c.out; ++o)
        for (int64_t i = 0; i < c.in; ++i) {
          double p = 0;
          for (int j = 0; j < r; ++j) p += (double)c.B[(size_t)(o * r + j)] * c.A[(size_t)(j * c.in + i)];
          const double wv = c.W[(size_t)(o * c.in + i)];
          R[(size_t)(o * c.in + i)] = wv - p;
          energy += p * p;
          total += wv * wv;
          err = std::max(err, std::fabs(wv - p));
        }
      const int64_t k = std::min(c.out, c.in);
      if (r == k) {
        EXPECT_LT(err, 1e-5) << "full rank reconstructs W";
        continue;
      }
      EXPECT_GE(energy, total * r / (double)k) << "the top singular directions";
      double orth = 0;  // max |B^T R| and |R A^T|
      for (int j = 0; j < r; ++j) {
        for (int64_t i = 0; i < c.in; ++i) {
          double t = 0;
          for (int64_t o = 0; o < c.out; ++o) t += c.B[(size_t)(o * r + j)] * R[(size_t)(o * c.in + i)];
          orth = std::max(orth, std::fabs(t));
        }
        for (int64_t o = 0; o < c.out; ++o) {
          double t = 0;
          for (int64_t i = 0; i < c.in; ++i) t += R[(size_t)(o * c.in + i)] * c.A[(size_t)(j * c.in + i)];
          orth = std::max(orth, std::fabs(t));
        }
      }
      EXPECT_LT(orth, 1e-5) << "the residual is orthogonal to the factors";
    }
  }
  ModelConfig too_big = tiny("lowrank", 0, 13);  // above min(dim, ...) = 12
  too_big.structured.post_init = "svd";
  EXPECT_THROW(Transformer(too_big, resolve_dims(too_big, too_big.vocab_size)), Error);
}


// The shipped config of the paper's s model: FFN 3072 wide, rank 384 on layers 1-11.
TEST(LowRank, PaperSmallConfig) {
  const TrainConfig c = parse_config<TrainConfig>({"config=" + std::string(LINGUA_SOURCE_DIR) + "/configs/structured_s_lowrank.yaml"});
  const ModelDims d = resolve_dims(c.model, c.model.vocab_size);
  EXPECT_EQ(d.hidden, 3072);
  Transformer m(c.model, d);
  EXPECT_EQ(m.describe_ffn(), "lowrank on layers 1,2,3,4,5,6,7,8,9,10,11; swiglu on layers 0");
  const ParamStore& s = m.params();
  EXPECT_EQ(s.info(s.index("layers.1.feed_forward.w1.b.weight")).shape, (std::vector<int64_t>{3072, 384}));
}


namespace {

TrainConfig structured_config(const std::string& ffn, const std::string& tag) {
  const fs::path data = test_e2e::make_corpus(tag);
  TrainConfig c = test_e2e::tiny_config(data, test_e2e::temp_dir(tag + "_run"));
  c.model.ffn = ffn;
  c.model.structured.nblocks = 4;  // dim 32, hidden 96
  c.model.structured.rank = 16;
  return c;
}

}  // namespace

// Stopped at step 10 and resumed, a run equals the uninterrupted one to the bit; the checkpoint
// loads for generation (full forward = the trained model's logits, KV-cache decoding close) and
// evaluation (the trainer's validation loss).
TEST(StructuredTrain, ResumeIsBitExactAndCheckpointsServeGenerationAndEval) {
  for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    TrainConfig c = structured_config(ffn, std::string("structured_") + ffn);
    const std::vector<int32_t> prompt = {1, 't', 'h', 'e', ' ', 'w'};
    const int T = (int)prompt.size();
    std::vector<float> trained;
    TrainHooks hooks;
    hooks.quiet = true;
    hooks.at_end = [&](Executor& m) {
      trained.resize((size_t)T * m.model().dims().vocab);
      m.forward_logits(prompt.data(), T, trained.data());
    };
    const TrainResult straight = train(c, hooks);
    ASSERT_EQ(straight.losses.size(), 20u);
    EXPECT_LT(straight.losses.back(), straight.losses.front());

    TrainConfig s = c;
    s.dump_dir = test_e2e::temp_dir(std::string("structured_split_") + ffn).string();
    const TrainResult first = train(s, {[](int64_t st) { return st < 10; }, true});
    const TrainResult second = train(s, {nullptr, true});
    EXPECT_EQ(second.start_step, 10);
    std::vector<double> joined = first.losses;
    joined.insert(joined.end(), second.losses.begin(), second.losses.end());
    EXPECT_EQ(joined, straight.losses);

    LoadedModel m = load_model(c.dump_dir);
    LoadedModel r = load_model(s.dump_dir);
    EXPECT_EQ(m.model->params().host_values(), r.model->params().host_values());
    EXPECT_EQ(m.model->describe_ffn(), std::string(ffn) + " on layers 1; swiglu on layers 0");
    const int V = m.model->dims().vocab;
    std::vector<float> logits((size_t)T * V), step(V);
    m.exec->forward_logits(prompt.data(), T, logits.data());
    EXPECT_EQ(logits, trained);
    KVCache cache = m.exec->make_cache(T);
    m.exec->forward_decode(prompt.data(), 2, cache, step.data());
    for (int t = 2; t < T; ++t) {
      m.exec->forward_decode(prompt.data() + t, 1, cache, step.data());
      for (int v = 0; v < V; ++v) ASSERT_NEAR(step[v], trained[(size_t)t * V + v], 1e-4) << t << "," << v;
    }
    const std::string ckpt = list_checkpoints((fs::path(c.dump_dir) / "checkpoints").string()).back().path;
    LoadedModel e = load_model(ckpt);
    auto res = evaluate_validation(*e.exec, *e.tokenizer, e.config.data, 0);
    auto evals = test_e2e::read_jsonl(fs::path(c.dump_dir) / "metrics.eval.jsonl");
    ASSERT_FALSE(evals.empty());
    EXPECT_DOUBLE_EQ(res.at("toy").nll_per_token(), evals.back()["toy/nll_per_token"].get<double>());
  }
}

// On the GPU (skipped without one): 40 steps of each variant follow the CPU's loss curve.
TEST(StructuredTrainCuda, LossCurveMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    TrainConfig c = structured_config(ffn, std::string("structured_cuda_") + ffn);
    c.steps = 40;
    c.checkpoint.dump.every = 0;
    c.checkpoint.eval.every = 0;
    const TrainResult cpu = train(c, {nullptr, true});
    c.dump_dir = test_e2e::temp_dir(std::string("structured_cuda_gpu_") + ffn).string();
    c.device = "cuda";
    const TrainResult gpu = train(c, {nullptr, true});
    test_e2e::expect_loss_curves_close(cpu.losses, gpu.losses);
    EXPECT_LT(gpu.losses.back(), gpu.losses.front() - 0.5);
  }
}

TEST(StructuredTrainCuda, GraphStepsEqualEagerSteps) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    ModelConfig mc = test_e2e::graph_test_model(3);
    mc.ffn = ffn;
    mc.structured.nblocks = 4;
    mc.structured.rank = 32;
    const OptimConfig oc = test_e2e::graph_test_optim();
    const std::vector<int32_t> ids = test_e2e::graph_test_ids();
    test_e2e::StepsRun eager = test_e2e::run_steps_on_gpu(mc, oc, ids, false, 6, 3);
    test_e2e::StepsRun graph = test_e2e::run_steps_on_gpu(mc, oc, ids, true, 6, 3);
    EXPECT_TRUE(graph.graph_in_use);
    EXPECT_EQ(eager.losses, graph.losses);
    EXPECT_EQ(eager.weights, graph.weights);
    EXPECT_EQ(eager.moments, graph.moments);
    EXPECT_LT(eager.losses.back(), eager.losses.front());
  }
}

// The shipped configs of the paper's models: each parses, its FFN width is the paper's, and its
// structured keys pass the variant's checks (the models themselves are too large to build here).
TEST(StructuredFfn, PaperConfigsResolve) {
  struct Want {
    const char* name;
    int hidden;
  };
  int n = 0;
  for (const char* v : {"lowrank", "blockdense", "blockshuffle"})
    for (Want w : {Want{"s", 3072}, Want{"m", 4096}, Want{"l", 6144}, Want{"xl", 8192}}) {
      const std::string path = std::string(LINGUA_SOURCE_DIR) + "/configs/structured_" + w.name + "_" + v + ".yaml";
      const TrainConfig c = parse_config<TrainConfig>({"config=" + path});
      EXPECT_EQ(resolve_dims(c.model, c.model.vocab_size).hidden, w.hidden) << path;
      EXPECT_EQ(c.model.ffn, v);
      const int64_t k = std::max(1, c.model.structured.nblocks);
      EXPECT_EQ(c.model.dim % k, 0);
      EXPECT_EQ(w.hidden % k, 0);
      EXPECT_EQ(c.model.structured.rank % k, 0);
      ++n;
    }
  for (Want w : {Want{"m", 4864}, Want{"l", 7424}}) {
    const std::string path = std::string(LINGUA_SOURCE_DIR) + "/configs/structured_wide_" + w.name + "_lowrank.yaml";
    const TrainConfig c = parse_config<TrainConfig>({"config=" + path});
    const ModelDims d = resolve_dims(c.model, c.model.vocab_size);
    EXPECT_EQ(d.hidden, w.hidden) << path;
    EXPECT_EQ(d.n_heads * d.head_dim, d.dim / 2) << "attention half as wide as the model";
    EXPECT_EQ(d.n_kv_heads, 4);
    ++n;
  }
  EXPECT_EQ(n, 14);
}
