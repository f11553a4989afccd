// STEM model tests on the CPU: the layer's formula, finite-difference gradients (the table's
// scatter-add with repeated tokens included), the accounting, init, config errors, decoding and
// the rows a step touched (gradients in activations: test.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/exec/testing.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/ffn/stem_edit.h"
#include "lingua/model/transformer.h"
#include "lingua/ops/testing.h"
#include "lingua/optim/optimizer.h"

using namespace lingua;
using test_util::ModelRun;

namespace {

ModelConfig stem_config(bool tying = false) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = 3;
  c.n_heads = 3;
  c.n_kv_heads = 1;
  c.multiple_of = 4;
  c.vocab_size = 11;
  c.max_seqlen = 16;
  c.weight_tying = tying;
  c.ffn = "stem";
  c.seed = 5;
  return c;
}

std::vector<int32_t> random_ids(int n, int vocab, uint32_t seed) { return test_util::random_ints(n, seed, 0, vocab - 1); }

float silu(float a) { return a / (1.0f + std::exp(-a)); }

}  // namespace

TEST(Stem, LayersDefaultToAllButTheFirstAndReplaceW3) {
  ModelConfig cfg = stem_config();
  ModelDims d = resolve_dims(cfg, 11);
  EXPECT_EQ(stem_layers(cfg), (std::vector<int>{1, 2}));
  Transformer m(cfg, d);
  EXPECT_EQ(m.describe_ffn(), "stem on layers 1,2; swiglu on layers 0");
  const ParamStore& s = m.params();
  EXPECT_GE(s.find("layers.0.feed_forward.w3.weight"), 0);
  EXPECT_LT(s.find(stem_table_name(0)), 0);
  for (int l : {1, 2}) {
    EXPECT_LT(s.find("layers." + std::to_string(l) + ".feed_forward.w3.weight"), 0);
    const ParamInfo& p = s.info(s.index(stem_table_name(l)));
    EXPECT_EQ(p.shape, (std::vector<int64_t>{11, d.hidden}));
    EXPECT_EQ(p.group, kStemGroup);
    EXPECT_TRUE(p.embedding);
    EXPECT_FALSE(p.compute_copy);
  }
  cfg.stem_layers = std::vector<int>{2, 0};
  EXPECT_EQ(stem_layers(cfg), (std::vector<int>{0, 2}));
}

TEST(Stem, ConfigErrorsNameTheKey) {
  auto message = [](ModelConfig c) {
    try {
      resolve_dims(c, 11);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ModelConfig c = stem_config();
  c.stem_layers = std::vector<int>{1, 3};
  EXPECT_NE(message(c).find("model.stem_layers': layer 3 is outside [0, 3)"), std::string::npos) << message(c);
  c.stem_layers = std::vector<int>{1, 1};
  EXPECT_NE(message(c).find("listed twice"), std::string::npos) << message(c);
  c.ffn = "swiglu";
  EXPECT_NE(message(c).find("set model.ffn=stem"), std::string::npos) << message(c);
}

// ffn(x) = w2(silu(w1 x) * E[token]) with the residual added, against a direct computation.
TEST(Stem, ForwardIsTheFormula) {
  ModelConfig cfg = stem_config();
  ModelDims d = resolve_dims(cfg, 11);
  ParamStore store;
  std::unique_ptr<FeedForward> ffn = make_ffn("stem", FfnBuildArgs{store, d, cfg, 1, "layers.1.feed_forward."});
  store.finalize();
  store.init(3);
  const int64_t N = 7, D = d.dim, H = d.hidden;
  std::mt19937 g(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(N * D), res(N * D), out(N * D);
  for (auto& v : x) v = nd(g);
  for (auto& v : res) v = nd(g);
  std::vector<int32_t> tok = {3, 0, 3, 10, 7, 3, 1};
  Arena saved(Device::cpu), scratch(Device::cpu);
  saved.reserve(1 << 16);
  scratch.reserve(1 << 16);
  StepContext ctx;
  ctx.saved = &saved;
  ctx.scratch = &scratch;
  ctx.tokens = Tensor(tok.data(), {N});
  ctx.seq = SeqLayout{1, (int)N, 0};
  ctx.save_for_backward = false;
  ffn->forward(Tensor(x.data(), {N, D}), Tensor(res.data(), {N, D}), Tensor(out.data(), {N, D}), ctx);
  const float* w1 = store.param(store.index("layers.1.feed_forward.w1.weight")).f32();
  const float* w2 = store.param(store.index("layers.1.feed_forward.w2.weight")).f32();
  const float* E = store.param(store.index(stem_table_name(1))).f32();
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> gact(H);
    for (int64_t h = 0; h < H; ++h) {
      double a = 0;
      for (int64_t k = 0; k < D; ++k) a += (double)w1[h * D + k] * x[n * D + k];
      gact[h] = silu((float)a) * (double)E[tok[n] * H + h];
    }
    for (int64_t j = 0; j < D; ++j) {
      double o = res[n * D + j];
      for (int64_t h = 0; h < H; ++h) o += (double)w2[j * H + h] * gact[h];
      EXPECT_NEAR(out[n * D + j], o, 1e-4 * (1 + std::fabs(o))) << n << "," << j;
    }
  }
  EXPECT_EQ(ffn->matmul_params(), 2 * D * H);
}

// Every parameter's gradient against central differences of the loss, the tables' included: the
// entries checked in a table are in rows of tokens the batch uses (some repeated), and the rows of
// tokens it does not use have exactly zero gradient.
void check_stem_gradients(bool tying) {
  ModelConfig cfg = stem_config(tying);
  ModelDims d = resolve_dims(cfg, 11);
  ModelRun m(cfg, d);
  const int B = 2, T = 6;
  auto tok = random_ids(B * T, 7, 1);  // ids < 7: rows 7..10 unused
  tok[1] = tok[0];
  tok[8] = tok[0];  // a token three times
  auto tgt = random_ids(B * T, d.vocab, 2);
  tgt[4] = -1;
  const float scale = 0.2f;
  m.params().zero_grads();
  m.exec.forward_backward(tok.data(), tgt.data(), B, T, scale);
  std::vector<float> grad = m.params().host_grads();
  std::mt19937 g(3);
  int checked_table = 0;
  for (int id : m.params().ids()) {
    const ParamInfo& p = m.params().info(id);
    const bool is_table = p.group == kStemGroup;
    for (int k = 0; k < (is_table ? 12 : 4); ++k) {
      int64_t e = (int64_t)(g() % p.numel);
      if (is_table) {
        const int64_t H = p.shape[1];
        e = (k == 0 ? tok[0] : tok[g() % tok.size()]) * H + e % H;  // k == 0: the repeated token
      }
      const int64_t i = p.grad_offset + e;
      const double fd = test_util::finite_difference(m.exec, id, e, tok, tgt, B, T, scale);
      EXPECT_NEAR(grad[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << p.name << " entry " << e;
      if (is_table) {
        ++checked_table;
        EXPECT_NE(grad[i], 0.0f) << p.name << " entry " << e;  // a used row has a gradient
      }
    }
    if (is_table) {
      const int64_t H = p.shape[1];
      for (int64_t r = 7; r < 11; ++r)
        for (int64_t h = 0; h < H; ++h) ASSERT_EQ(grad[p.grad_offset + r * H + h], 0.0f) << p.name << " row " << r;
    }
  }
  EXPECT_EQ(checked_table, 24);
}

TEST(Stem, GradientsMatchFiniteDifferences) { check_stem_gradients(false); }
TEST(Stem, GradientsMatchFiniteDifferencesTied) { check_stem_gradients(true); }

TEST(Stem, AccountingCountsTablesAsParametersNotFlops) {
  ModelConfig cfg = stem_config();
  ModelDims d = resolve_dims(cfg, 11);
  Transformer m(cfg, d);
  ModelConfig dense_cfg = cfg;
  dense_cfg.ffn = "swiglu";
  Transformer dense(dense_cfg, resolve_dims(dense_cfg, 11));
  const int64_t V = 11, D = 12, H = d.hidden;
  ParamCounts pc = m.param_counts(), pd = dense.param_counts();
  // Two STEM layers: each drops w3 [H, D] and adds a table [V, H].
  EXPECT_EQ(pc.groups.at(kStemGroup), 2 * V * H);
  EXPECT_TRUE(pd.groups.empty());
  EXPECT_EQ(pc.total, pd.total - 2 * H * D + 2 * V * H);
  EXPECT_EQ(pc.embedding, V * D + 2 * V * H);
  EXPECT_EQ(pc.active_non_embedding, pd.active_non_embedding - 2 * H * D);
  EXPECT_DOUBLE_EQ(m.flops_per_token(16), 6.0 * pc.active_non_embedding + 6.0 * 3 * 12 * 16);
}

TEST(Stem, TableInitIsXavierNormal) {
  ModelConfig cfg = stem_config();
  cfg.dim = 64;
  cfg.n_heads = 4;
  cfg.n_kv_heads = 4;
  cfg.vocab_size = 300;
  cfg.multiple_of = 32;
  ModelDims d = resolve_dims(cfg, 300);
  Transformer m(cfg, d);
  const ParamInfo& p = m.params().info(m.params().index(stem_table_name(1)));
  const float* w = m.params().params_data() + p.offset;
  const double want = std::sqrt(2.0 / (300.0 + d.hidden));
  double s1 = 0, s2 = 0, beyond3 = 0;
  for (int64_t i = 0; i < p.numel; ++i) {
    s1 += w[i];
    s2 += (double)w[i] * w[i];
    beyond3 += std::fabs(w[i]) > 3 * want;
  }
  EXPECT_NEAR(s1 / p.numel, 0.0, 0.02 * want);
  EXPECT_NEAR(std::sqrt(s2 / p.numel), want, 0.02 * want);
  EXPECT_GT(beyond3, 0);  // a plain normal, not cut at 3 std (~0.27% of entries)
  // Two tables differ (the init stream is the name).
  const ParamInfo& q = m.params().info(m.params().index(stem_table_name(2)));
  EXPECT_NE(w[0], m.params().params_data()[q.offset]);
}

TEST(Stem, DecodeWithCacheMatchesFullForward) {
  ModelConfig cfg = stem_config();
  ModelDims d = resolve_dims(cfg, 11);
  ModelRun run(cfg, d);
  Executor& m = run.exec;
  const int T = 9;
  auto tok = random_ids(T, d.vocab, 6);
  std::vector<float> logits((size_t)T * d.vocab), step(d.vocab);
  m.forward_logits(tok.data(), T, logits.data());
  KVCache cache = m.make_cache(16);
  m.forward_decode(tok.data(), 3, cache, step.data());
  for (int v = 0; v < d.vocab; ++v) EXPECT_NEAR(step[v], logits[2 * d.vocab + v], 1e-4);
  for (int t = 3; t < T; ++t) {
    m.forward_decode(tok.data() + t, 1, cache, step.data());
    for (int v = 0; v < d.vocab; ++v) EXPECT_NEAR(step[v], logits[t * d.vocab + v], 1e-4) << "t=" << t;
  }
}

// The table group is declared by the STEM layer, with optim.stem.* over optim.* and row-sparse
// with optim.stem.sparse; the optimizer marks the rows of the step's input ids.
TEST(Stem, GroupIsDeclaredByTheLayerAndRowsSeenAreTheStepsInputIds) {
  ModelConfig cfg = stem_config();
  Transformer m(cfg, resolve_dims(cfg, 11));
  const OptimGroupSpec* spec = m.params().group_spec(kStemGroup);
  ASSERT_NE(spec, nullptr);
  OptimConfig oc;
  oc.lr = 1e-3;
  oc.clip = 2.0;
  oc.stem.lr = 5e-4;
  oc.stem.beta2 = 0.99;
  OptimGroupHyper h = spec->resolve(oc);
  EXPECT_EQ(h.lr, 5e-4);
  EXPECT_EQ(h.beta2, 0.99);
  EXPECT_EQ(h.clip, 2.0);  // unset: the model's
  EXPECT_EQ(h.weight_decay, oc.weight_decay);
  EXPECT_FALSE(h.rows_by_input_ids);
  oc.stem.sparse = true;
  AdamW opt(m.params(), oc);
  ASSERT_TRUE(opt.row_sparse());
  EXPECT_EQ(opt.groups()[1].name, kStemGroup);
  EXPECT_EQ(opt.groups()[1].hyper.lr, 5e-4);
  std::vector<int32_t> a = {1, 4, 4, 9}, b = {2, 4, 0, 0};
  auto seen = [&] {
    const int32_t* r = opt.rows_seen().i32();
    std::vector<int> rows;
    for (int v = 0; v < 11; ++v)
      if (r[v]) rows.push_back(v);
    return rows;
  };
  opt.observe_input_ids(Tensor(a.data(), {4}), true);
  opt.observe_input_ids(Tensor(b.data(), {4}), false);
  EXPECT_EQ(seen(), (std::vector<int>{0, 1, 2, 4, 9}));  // the union over the step's micro-batches
  opt.observe_input_ids(Tensor(b.data(), {4}), true);    // a new step starts afresh
  EXPECT_EQ(seen(), (std::vector<int>{0, 2, 4}));
  ModelConfig dense = cfg;
  dense.ffn = "swiglu";
  Transformer dm(dense, resolve_dims(dense, 11));
  EXPECT_FALSE(AdamW(dm.params(), oc).row_sparse());
  // optim.stem.sparse without STEM layers is a config error naming the key.
  try {
    check_ffn_config(dense, &oc);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optim.stem.sparse"), std::string::npos) << e.what();
  }
}
