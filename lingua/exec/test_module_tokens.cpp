// Module tokens (lingua/model/module_tokens.h) on the CPU: a model whose modules are disabled is
// bitwise the base model; every aggregation mode's gradients (module blocks and base weights)
// against central differences; the run order is the sorted names whatever the config's order;
// token positions do not depend on the module rows before them; KV-cache decoding equals the full
// forward; create_module_name freezes all but the created module; gradients over dead
// activations equal gradients in their own buffer.
#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <map>
#include <random>
#include <string>

#include "lingua/exec/testing.h"
#include "lingua/model/probe_observer.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

const int kVocab = 13;

ModelConfig tiny(const std::vector<std::string>& modules = {}, const std::string& agg = "avg", int M = 2,
                 int layers = 3) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = layers;
  c.n_heads = 3;
  c.n_kv_heads = 1;
  c.multiple_of = 4;
  c.vocab_size = kVocab;
  c.max_seqlen = 24;
  c.init_std_factor = "current_depth";
  c.seed = 5;
  c.modules = modules;
  c.module_seq_len = modules.empty() ? 0 : M;
  c.module_agg = agg;
  return c;
}

std::vector<int32_t> ids(int n, uint32_t seed) { return random_ints(n, seed, 0, kVocab - 1); }

std::vector<float> logits_of(ModelRun& m, const std::vector<int32_t>& tok) {
  std::vector<float> out(tok.size() * kVocab);
  m.exec.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

// Module blocks drawn at init are small; larger values make every gradient path visible.
void scale_module_params(ParamStore& s, float by) {
  for (int id : s.ids())
    if (is_module_param(s.info(id).name)) {
      std::vector<float> v = s.host_param(id);
      for (float& x : v) x *= by;
      s.set_param(id, v.data());
    }
}

}  // namespace

TEST(ModuleTokens, ParametersPerLayerAndMode) {
  for (const char* agg : {"stack", "sum", "avg", "mean", "drop"}) {
    ModelRun m(tiny({"b", "a"}, agg, 3), resolve_dims(tiny({"b", "a"}, agg, 3), kVocab));
    for (int l = 0; l < 3; ++l)
      for (const char* name : {"a", "b"}) {
        const int id = m.params().find(module_param_name(l, name));
        const bool want = l == 0 || std::string(agg) != "stack";
        ASSERT_EQ(id >= 0, want) << agg << " layer " << l;
        if (id < 0) continue;
        EXPECT_EQ(m.params().info(id).shape, (std::vector<int64_t>{3, 12}));
        EXPECT_EQ(m.model.stage_of(id), 1 + l) << "a layer's module blocks are part of its stage";
        EXPECT_TRUE(m.params().trainable(id));
      }
    EXPECT_EQ(m.exec.prefix_rows(), 6);
    EXPECT_EQ(m.model.module_tokens()->enabled(), (std::vector<std::string>{"a", "b"}));
  }
  // The weights of each mode (incoming rows a, parameters b).
  ModuleTokens mean(tiny({"x"}, "mean"), resolve_dims(tiny({"x"}, "mean"), kVocab));
  EXPECT_EQ(mean.stream_weight(0), 0.0f);
  EXPECT_EQ(mean.param_weight(0), 1.0f);
  EXPECT_FLOAT_EQ(mean.stream_weight(2), 2.0f / 3.0f);
  EXPECT_FLOAT_EQ(mean.param_weight(2), 1.0f / 3.0f);
  ModuleTokens drop(tiny({"x"}, "drop"), resolve_dims(tiny({"x"}, "drop"), kVocab));
  EXPECT_EQ(drop.stream_weight(1), 0.0f);
  EXPECT_EQ(drop.param_weight(1), 1.0f);
}

TEST(ModuleTokens, DisabledModulesGiveTheBaseModelBitwise) {
  ModelConfig base_cfg = tiny(), off_cfg = tiny({"code", "math"});
  off_cfg.enabled_modules = std::vector<std::string>{};
  ModelRun base(base_cfg, resolve_dims(base_cfg, kVocab)), off(off_cfg, resolve_dims(off_cfg, kVocab));
  ModelRun on(tiny({"code", "math"}), resolve_dims(tiny({"code", "math"}), kVocab));
  EXPECT_EQ(off.exec.prefix_rows(), 0);
  // The base weights are drawn by name: the same in the three models.
  for (int id : base.params().ids()) {
    const std::string& n = base.params().info(id).name;
    EXPECT_EQ(base.params().host_param(id), off.params().host_param(off.params().index(n))) << n;
  }
  auto tok = ids(11, 1), tgt = ids(11, 2);
  EXPECT_EQ(logits_of(base, tok), logits_of(off, tok));
  EXPECT_NE(logits_of(base, tok), logits_of(on, tok));
  // Training: the same loss and the same gradients; the disabled modules are frozen.
  base.params().zero_grads();
  off.params().zero_grads();
  const LossSum lb = base.exec.forward_backward(tok.data(), tgt.data(), 1, 11, 0.1f);
  const LossSum lo = off.exec.forward_backward(tok.data(), tgt.data(), 1, 11, 0.1f);
  EXPECT_EQ(lb.nll, lo.nll);
  for (int id : off.params().ids()) {
    const std::string& n = off.params().info(id).name;
    if (is_module_param(n)) {
      EXPECT_FALSE(off.params().trainable(id)) << n;
      continue;
    }
    const Tensor a = base.params().grad(base.params().index(n)), b = off.params().grad(id);
    EXPECT_EQ(std::vector<float>(a.f32(), a.f32() + a.numel()), std::vector<float>(b.f32(), b.f32() + b.numel())) << n;
  }
}

void check_gradients(const std::string& agg, bool grads_in_activations, const std::string& ffn = "swiglu") {
  SCOPED_TRACE(agg + " " + ffn);
  ModelConfig cfg = tiny({"m1", "m0"}, agg, 2);
  if (ffn != "swiglu") {
    cfg.ffn = ffn;
    cfg.structured.rank = 4;
  }
  ModelRun m(cfg, resolve_dims(cfg, kVocab));
  scale_module_params(m.params(), 20.0f);
  m.exec.set_grads_in_activations(grads_in_activations);
  const int B = 2, T = 5;
  auto tok = ids(B * T, 3), tgt = ids(B * T, 4);
  tgt[1] = -1;
  const float scale = 0.1f;
  m.params().zero_grads();
  m.exec.forward_backward(tok.data(), tgt.data(), B, T, scale);
  const std::vector<float> grad = m.params().host_grads();
  std::mt19937 g(9);
  double module_norm = 0;
  for (int id : m.params().ids()) {
    const ParamInfo& p = m.params().info(id);
    const bool module = is_module_param(p.name);
    for (int k = 0; k < (module ? 8 : 2); ++k) {
      const int64_t e = (int64_t)(g() % p.numel);
      const double f = finite_difference(m.exec, id, e, tok, tgt, B, T, scale);
      const float got = grad[p.grad_offset + e];
      EXPECT_NEAR(got, f, 2e-3 + 3e-2 * std::fabs(f)) << p.name << " entry " << e;
      if (module) module_norm += (double)got * got;
    }
  }
  EXPECT_GT(module_norm, 1e-8) << "the module blocks get gradients";
}

TEST(ModuleTokens, GradientsMatchFiniteDifferencesStack) { check_gradients("stack", false); }
TEST(ModuleTokens, GradientsMatchFiniteDifferencesSum) { check_gradients("sum", false); }
TEST(ModuleTokens, GradientsMatchFiniteDifferencesAvg) { check_gradients("avg", true); }
TEST(ModuleTokens, GradientsMatchFiniteDifferencesMean) { check_gradients("mean", false); }
TEST(ModuleTokens, GradientsMatchFiniteDifferencesDrop) { check_gradients("drop", true); }
// Module rows run through any FFN variant that takes them (a structured one here).
TEST(ModuleTokens, GradientsMatchFiniteDifferencesLowRankFfn) { check_gradients("avg", false, "lowrank"); }

// Gradients over dead activations (each stage's range, the module blocks' included, zeroed just
// before it is written) equal gradients in the store's own buffer.
TEST(ModuleTokens, GradientsInActivationsEqualOwnBuffer) {
  ModelConfig cfg = tiny({"a", "b"}, "mean", 3);
  ModelRun own(cfg, resolve_dims(cfg, kVocab)), shared(cfg, resolve_dims(cfg, kVocab));
  shared.exec.set_grads_in_activations(true);
  auto tok = ids(2 * 6, 5), tgt = ids(2 * 6, 6);
  for (int rep = 0; rep < 2; ++rep) {
    own.params().zero_grads();
    own.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 0.2f);
    shared.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 0.2f);
    const auto a = own.params().host_grads(), b = shared.params().host_grads();
    for (int id : own.params().ids()) {
      const ParamInfo& p = own.params().info(id);
      if (p.grad_offset < 0) continue;
      for (int64_t i = 0; i < p.numel; ++i)
        if (a[p.grad_offset + i] != b[p.grad_offset + i]) {
          ADD_FAILURE() << p.name << " " << i << " " << a[p.grad_offset + i] << " vs " << b[p.grad_offset + i];
          break;
        }
    }
  }
}

TEST(ModuleTokens, RunInSortedNameOrderWhateverTheConfigOrder) {
  ModelConfig ab = tiny({"alpha", "beta", "gamma"}), ba = tiny({"gamma", "alpha", "beta"});
  ab.enabled_modules = std::vector<std::string>{"alpha", "gamma"};
  ba.enabled_modules = std::vector<std::string>{"gamma", "alpha"};
  ModelRun x(ab, resolve_dims(ab, kVocab)), y(ba, resolve_dims(ba, kVocab));
  EXPECT_EQ(y.model.module_tokens()->enabled(), (std::vector<std::string>{"alpha", "gamma"}));
  auto tok = ids(9, 7);
  EXPECT_EQ(logits_of(x, tok), logits_of(y, tok));
  // The order matters to the function (module rows attend to those before them): swapping the
  // two modules' values changes it, so the test above could fail.
  ModelRun z(ab, resolve_dims(ab, kVocab));
  for (int l = 0; l < 3; ++l) {
    const int a = z.params().index(module_param_name(l, "alpha")), g = z.params().index(module_param_name(l, "gamma"));
    std::vector<float> va = z.params().host_param(a), vg = z.params().host_param(g);
    z.params().set_param(a, vg.data());
    z.params().set_param(g, va.data());
  }
  EXPECT_NE(logits_of(z, tok), logits_of(x, tok));
}

namespace {

// Keeps layer 0's q and k of the token rows (after RoPE).
struct QkRecorder : ProbeObserver {
  std::vector<float> q, k;
  void linear_forward(const Linear&, const Tensor&, const Tensor&) override {}
  void linear_backward(const Linear&, const Tensor&) override {}
  std::deque<std::vector<float>> scratch;
  Tensor scratch_like(const Tensor& t) override {  // (CPU, f32)
    scratch.emplace_back(t.numel());
    Tensor r = t;
    r.data = scratch.back().data();
    return r;
  }
  void attention_scores(const std::string& name, const Tensor& qt, const Tensor& kt, int prefix) override {
    if (name != "layers.0.attention") return;
    const int64_t S = qt.size(1), qrow = qt.numel() / qt.size(0) / S, krow = kt.numel() / kt.size(0) / S;
    q.assign(qt.f32() + prefix * qrow, qt.f32() + S * qrow);  // (one sequence)
    k.assign(kt.f32() + prefix * krow, kt.f32() + S * krow);
  }
};

}  // namespace

// Layer 0's queries and keys of the token rows depend on the tokens and their positions only: with
// 0, 1 x 2 or 3 x 4 module rows before them they are the same (to rounding: the matmuls run on
// other row counts), so token t keeps position t. (Rotated as if it sat at position t + 2, a row's
// first pair would turn by 2 radians: an O(1) difference.)
TEST(ModuleTokens, TokenPositionsDoNotDependOnTheModuleRows) {
  auto tok = ids(10, 8);
  std::vector<std::vector<float>> qs, ks;
  for (auto [n, M] : {std::pair<int, int>{0, 0}, {1, 2}, {3, 4}}) {
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) names.push_back("m" + std::to_string(i));
    ModelConfig cfg = tiny(names, "sum", M);
    ModelRun m(cfg, resolve_dims(cfg, kVocab));
    EXPECT_EQ(m.exec.prefix_rows(), n * M);
    QkRecorder rec;
    {
      ScopedProbeObserver scope(&rec);
      logits_of(m, tok);
    }
    ASSERT_EQ(rec.q.size(), 10u * 12);
    qs.push_back(rec.q);
    ks.push_back(rec.k);
  }
  for (int i : {1, 2}) {
    EXPECT_LT(rel_l2(qs[i], qs[0]), 1e-6) << i;
    EXPECT_LT(rel_l2(ks[i], ks[0]), 1e-6) << i;
  }
}

// Decoding with a KV cache holding the module rows (the first call writes them) gives the full
// forward's logits, for every mode, several sequences in step.
TEST(ModuleTokens, CachedDecodingEqualsTheFullForward) {
  for (const char* agg : {"stack", "sum", "avg", "mean", "drop"}) {
    SCOPED_TRACE(agg);
    ModelConfig cfg = tiny({"a", "b"}, agg, 2);
    ModelRun m(cfg, resolve_dims(cfg, kVocab));
    scale_module_params(m.params(), 10.0f);
    const int B = 2, T = 8, first = 3;
    auto tok = ids(B * T, 10);
    std::vector<std::vector<float>> full;
    for (int b = 0; b < B; ++b) full.push_back(logits_of(m, std::vector<int32_t>(tok.begin() + b * T, tok.begin() + (b + 1) * T)));
    KVCache cache = m.exec.make_cache(T, B);
    std::vector<float> step((size_t)B * kVocab);
    std::vector<int32_t> in;
    for (int b = 0; b < B; ++b) in.insert(in.end(), tok.begin() + b * T, tok.begin() + b * T + first);
    m.exec.forward_decode(in.data(), B, first, cache, step.data());
    EXPECT_EQ(cache.prefix, 4);
    for (int t = first - 1; t < T; ++t) {
      if (t >= first) {
        std::vector<int32_t> one;
        for (int b = 0; b < B; ++b) one.push_back(tok[b * T + t]);
        m.exec.forward_decode(one.data(), B, 1, cache, step.data());
      }
      for (int b = 0; b < B; ++b)
        for (int v = 0; v < kVocab; ++v)
          EXPECT_NEAR(step[b * kVocab + v], full[b][t * kVocab + v], 1e-4) << "b " << b << " t " << t;
    }
  }
}

TEST(ModuleTokens, CreatingAModuleFreezesEverythingElse) {
  ModelConfig cfg = tiny({"old"}, "sum");
  cfg.create_module_name = "new";
  cfg.modules.push_back("new");  // (TrainConfig::resolve_defaults adds it)
  ModelRun m(cfg, resolve_dims(cfg, kVocab));
  int trainable = 0;
  for (int id : m.params().ids()) {
    std::string module;
    const bool mine = is_module_param(m.params().info(id).name, &module) && module == "new";
    EXPECT_EQ(m.params().trainable(id), mine) << m.params().info(id).name;
    trainable += mine;
  }
  EXPECT_EQ(trainable, 3);
  const ParamCounts pc = m.model.param_counts();
  EXPECT_EQ(pc.frozen + 3 * 2 * 12, pc.total);
  // FLOPs: every multiplied weight frozen (4 per weight: no weight gradient), over the 16 token
  // rows and the 4 module rows (2 modules x 2) of each sequence.
  EXPECT_EQ(m.exec.prefix_rows(), 4);
  EXPECT_DOUBLE_EQ(m.model.flops_per_token(16), 20.0 / 16 * (4.0 * pc.active_non_embedding + 6.0 * 3 * 12 * 20));
  // A step: only the new module's gradients exist, and they are not zero.
  auto tok = ids(2 * 5, 11), tgt = ids(2 * 5, 12);
  m.params().zero_grads();
  m.exec.forward_backward(tok.data(), tgt.data(), 2, 5, 0.1f);
  double norm = 0;
  for (float v : m.params().host_grads()) norm += (double)v * v;
  EXPECT_GT(norm, 0.0);
}

TEST(ModuleTokens, ConfigErrorsNameTheKey) {
  auto err = [](ModelConfig c) {
    try {
      resolve_dims(c, kVocab);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ModelConfig c = tiny({"a.b"});
  EXPECT_NE(err(c).find("model.modules"), std::string::npos);
  c = tiny({"a", "a"});
  EXPECT_NE(err(c).find("twice"), std::string::npos);
  c = tiny({"a"});
  c.module_seq_len = 0;
  EXPECT_NE(err(c).find("model.module_seq_len"), std::string::npos);
  c = tiny({"a"});
  c.enabled_modules = std::vector<std::string>{"b"};
  EXPECT_NE(err(c).find("no module 'b'"), std::string::npos);
  c = tiny({"a"});
  c.ffn = "stem";
  EXPECT_NE(err(c).find("STEM"), std::string::npos);
  c.enabled_modules = std::vector<std::string>{};
  EXPECT_EQ(err(c), "");
}
