// The executor's seams, on the CPU: per-layer hooks (order, what they see, that they can change a
// step), prefix rows in the row layout (finite-difference gradients through them, the loss over
// token rows only, decoding with a KV cache that holds them), frozen weights (no gradient, no
// weight-gradient matmul), and a parameter layout that changes between steps.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "lingua/exec/testing.h"
#include "lingua/model/linear.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

ModelConfig tiny(int layers = 3, bool tying = false) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = layers;
  c.n_heads = 3;
  c.n_kv_heads = 1;
  c.multiple_of = 4;
  c.vocab_size = 13;
  c.max_seqlen = 24;
  c.weight_tying = tying;
  c.init_std_factor = "current_depth";
  c.seed = 3;
  return c;
}

std::vector<int32_t> ids(int n, uint32_t seed, int vocab = 13) { return random_ints(n, seed, 0, vocab - 1); }

// Records every call, and checks what each sees.
struct RecordingHooks : LayerHooks {
  std::vector<std::string> calls;
  std::vector<const void*> outputs;  // after_forward's y, by layer
  void before_forward(int l, const Tensor& x, const StepContext& ctx) override {
    calls.push_back("F" + std::to_string(l));
    // A block's input is the previous block's output.
    if (l > 0 && (int)outputs.size() >= l) EXPECT_EQ(x.data, outputs[l - 1]);
  }
  void after_forward(int l, const Tensor& y, const StepContext&) override {
    calls.push_back("f" + std::to_string(l));
    outputs.resize(l + 1);
    outputs[l] = y.data;
  }
  void before_backward(int l, const Tensor& dy, const Tensor& dy_act, const StepContext&) override {
    calls.push_back("B" + std::to_string(l));
    EXPECT_EQ(dy.data, dy_act.data);  // one f32 gradient on the CPU
  }
  void after_backward(int l, const Tensor&, const Tensor&, const StepContext&) override {
    calls.push_back("b" + std::to_string(l));
  }
};

// Writes `values` ([P, dim], the same for every sequence) into the prefix rows before block 0, and
// sums the gradient of those rows over the sequences after block 0's backward: a dummy of learned
// prefix tokens.
struct PrefixHooks : LayerHooks {
  int P, D;
  std::vector<float> values, grad;
  PrefixHooks(int P_, int D_, uint32_t seed) : P(P_), D(D_), values(random_vector((size_t)P_ * D_, seed)) {}
  void before_forward(int l, const Tensor& x, const StepContext& ctx) override {
    if (l != 0 || ctx.seq.prefix == 0) return;
    ASSERT_EQ(ctx.seq.prefix, P);
    Tensor v(values.data(), {(int64_t)P, (int64_t)D});
    for (int b = 0; b < ctx.seq.B; ++b) copy_row_blocks(x, 0, (int64_t)b * ctx.seq.S(), v, 0, 0, 1, P);
  }
  void after_backward(int l, const Tensor& dx, const Tensor&, const StepContext& ctx) override {
    if (l != 0) return;
    grad.assign((size_t)P * D, 0.0f);
    const float* d = dx.f32();
    for (int b = 0; b < ctx.seq.B; ++b)
      for (int64_t i = 0; i < (int64_t)P * D; ++i) grad[i] += d[(int64_t)b * ctx.seq.S() * D + i];
  }
};

}  // namespace

TEST(Hooks, RunAroundEveryBlockInOrder) {
  ModelConfig cfg = tiny();
  ModelRun m(cfg, resolve_dims(cfg, 13));
  RecordingHooks rec;
  m.exec.add_hooks(&rec);
  auto tok = ids(2 * 5, 1), tgt = ids(2 * 5, 2);
  m.exec.forward_backward(tok.data(), tgt.data(), 2, 5, 1.0f);
  EXPECT_EQ(rec.calls, (std::vector<std::string>{"F0", "f0", "F1", "f1", "F2", "f2", "B2", "b2", "B1", "b1", "B0", "b0"}));
  rec.calls.clear();
  m.exec.forward_loss(tok.data(), tgt.data(), 2, 5);
  EXPECT_EQ(rec.calls, (std::vector<std::string>{"F0", "f0", "F1", "f1", "F2", "f2"}));
  rec.calls.clear();
  KVCache cache = m.exec.make_cache(8);
  std::vector<float> logits(13);
  m.exec.forward_decode(tok.data(), 3, cache, logits.data());
  EXPECT_EQ(rec.calls, (std::vector<std::string>{"F0", "f0", "F1", "f1", "F2", "f2"}));
  m.exec.remove_hooks(&rec);
  rec.calls.clear();
  m.exec.forward_loss(tok.data(), tgt.data(), 2, 5);
  EXPECT_TRUE(rec.calls.empty());
}

// Model hooks nest (before_* events in the order added, after_* in reverse: the first added is
// outermost); parallel hooks follow every model hook in each event, in the order added.
TEST(Hooks, ModelHooksNestAndParallelHooksComeLast) {
  std::vector<std::string> log;
  struct Named : LayerHooks {
    std::vector<std::string>* log;
    std::string name;
    bool par;
    Named(std::vector<std::string>* l, std::string n, bool p) : log(l), name(std::move(n)), par(p) {}
    void before_forward(int l, const Tensor&, const StepContext&) override { note("F", l); }
    void after_forward(int l, const Tensor&, const StepContext&) override { note("f", l); }
    void before_backward(int l, const Tensor&, const Tensor&, const StepContext&) override { note("B", l); }
    void after_backward(int l, const Tensor&, const Tensor&, const StepContext&) override { note("b", l); }
    void after_model_backward(const StepContext&) override { log->push_back("e" + name); }
    bool parallel() const override { return par; }
    void note(const char* e, int l) {
      if (l == 1) log->push_back(e + name);
    }
  };
  ModelConfig cfg = tiny();
  ModelRun m(cfg, resolve_dims(cfg, 13));
  Named p(&log, "P", true), a(&log, "A", false), q(&log, "Q", true), b(&log, "B", false);
  for (Named* h : {&p, &a, &q, &b}) m.exec.add_hooks(h);
  auto tok = ids(2 * 5, 1), tgt = ids(2 * 5, 2);
  m.exec.forward_backward(tok.data(), tgt.data(), 2, 5, 1.0f);
  EXPECT_EQ(log, (std::vector<std::string>{"FA", "FB", "FP", "FQ", "fB", "fA", "fP", "fQ", "BA", "BB", "BP", "BQ",
                                           "bB", "bA", "bP", "bQ", "eA", "eB", "eP", "eQ"}));
  for (Named* h : {&p, &a, &q, &b}) m.exec.remove_hooks(h);
}

// A hook acts on the step: scaling the residual stream before a block changes the loss; zeroing the
// gradient after a block's backward leaves every parameter below it without gradient (as a growth
// ramp or a stop-gradient would), and the ones above untouched.
TEST(Hooks, CanChangeTheForwardAndTheBackward) {
  ModelConfig cfg = tiny();
  ModelDims d = resolve_dims(cfg, 13);
  auto tok = ids(2 * 6, 3), tgt = ids(2 * 6, 4);
  ModelRun plain(cfg, d), hooked(cfg, d);
  struct Scale : LayerHooks {
    void before_forward(int l, const Tensor& x, const StepContext&) override {
      if (l == 1)
        for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] *= 2.0f;
    }
  } scale;
  hooked.exec.add_hooks(&scale);
  EXPECT_NE(plain.exec.forward_loss(tok.data(), tgt.data(), 2, 6).nll, hooked.exec.forward_loss(tok.data(), tgt.data(), 2, 6).nll);
  hooked.exec.remove_hooks(&scale);

  struct StopGradient : LayerHooks {
    void after_backward(int l, const Tensor& dx, const Tensor& dx_act, const StepContext&) override {
      if (l != 1) return;
      std::fill(dx.f32(), dx.f32() + dx.numel(), 0.0f);
      if (dx_act.data != dx.data) std::fill(dx_act.f32(), dx_act.f32() + dx_act.numel(), 0.0f);
    }
  } stop;
  hooked.exec.add_hooks(&stop);
  plain.params().zero_grads();
  hooked.params().zero_grads();
  plain.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 1.0f);
  hooked.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 1.0f);
  for (int id : hooked.params().ids()) {
    const ParamInfo& p = hooked.params().info(id);
    const int stage = hooked.model.stage_of(id);
    const Tensor g = hooked.params().grad(id), ref = plain.params().grad(id);
    const std::vector<float> got(g.f32(), g.f32() + g.numel()), want(ref.f32(), ref.f32() + ref.numel());
    if (stage <= 1)  // the embedding and block 0
      EXPECT_EQ(got, std::vector<float>(got.size(), 0.0f)) << p.name;
    else
      EXPECT_EQ(got, want) << p.name;
  }
}

// Prefix rows: every gradient (the prefix values' included) against central differences, for an
// untied and a tied model, with norm recomputation in the second.
void check_prefix_gradients(bool tying, bool recompute) {
  ModelConfig cfg = tiny(2, tying);
  cfg.recompute_norms = recompute;
  ModelDims d = resolve_dims(cfg, 13);
  ModelRun m(cfg, d);
  const int P = 3, B = 2, T = 5;
  PrefixHooks prefix(P, d.dim, 9);
  m.exec.set_prefix_rows(P);
  m.exec.add_hooks(&prefix);
  auto tok = ids(B * T, 5), tgt = ids(B * T, 6);
  tgt[2] = -1;
  const float scale = 0.1f;
  m.params().zero_grads();
  LossSum ls = m.exec.forward_backward(tok.data(), tgt.data(), B, T, scale);
  EXPECT_EQ(ls.tokens, B * T - 1);  // prefix rows carry no target
  const std::vector<float> grad = m.params().host_grads(), pgrad = prefix.grad;
  auto loss = [&] { return scale * m.exec.forward_loss(tok.data(), tgt.data(), B, T).nll; };
  auto fd = [&](float* w) {
    const float orig = *w, eps = 1e-2f;
    *w = orig + eps;
    const double lp = loss();
    *w = orig - eps;
    const double lm = loss();
    *w = orig;
    return (lp - lm) / (2 * eps);
  };
  std::mt19937 g(7);
  for (int64_t k = 0; k < (int64_t)prefix.values.size(); k += 5) {
    const double f = fd(&prefix.values[k]);
    EXPECT_NEAR(pgrad[k], f, 2e-3 + 3e-2 * std::fabs(f)) << "prefix value " << k;
  }
  double prefix_norm = 0;
  for (float v : pgrad) prefix_norm += (double)v * v;
  EXPECT_GT(prefix_norm, 1e-8);  // the prefix matters: tokens attend to it
  for (int id : m.params().ids()) {
    const ParamInfo& p = m.params().info(id);
    for (int k = 0; k < 4; ++k) {
      const int64_t e = (int64_t)(g() % p.numel);
      const double f = fd(m.params().param(id).f32() + e);
      EXPECT_NEAR(grad[p.grad_offset + e], f, 2e-3 + 3e-2 * std::fabs(f)) << p.name << " entry " << e;
    }
  }
}

TEST(PrefixRows, GradientsMatchFiniteDifferences) { check_prefix_gradients(false, false); }
TEST(PrefixRows, GradientsMatchFiniteDifferencesTiedRecomputed) { check_prefix_gradients(true, true); }

// The head sees the token rows only: the loss equals the cross-entropy of the token rows' logits;
// decoding with a KV cache that holds the prefix rows gives the full forward's logits; without the
// hook the prefix rows are zeros, which still change the tokens' outputs (they attend to them).
TEST(PrefixRows, LossIsOverTokenRowsAndDecodingHoldsThePrefix) {
  ModelConfig cfg = tiny();
  ModelDims d = resolve_dims(cfg, 13);
  ModelRun m(cfg, d);
  const int P = 2, T = 9, V = 13;
  PrefixHooks prefix(P, d.dim, 11);
  m.exec.add_hooks(&prefix);
  auto tok = ids(T, 8), tgt = ids(T, 9);
  std::vector<float> plain((size_t)T * V), logits((size_t)T * V), nll(T);
  m.exec.forward_logits(tok.data(), T, plain.data());
  m.exec.set_prefix_rows(P);
  m.exec.forward_logits(tok.data(), T, logits.data());
  EXPECT_NE(plain, logits);
  LossSum ls = m.exec.forward_loss(tok.data(), tgt.data(), 1, T, nll.data());
  EXPECT_EQ(ls.tokens, T);
  double sum = 0;
  for (int t = 0; t < T; ++t) {
    double mx = -1e30, z = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, (double)logits[t * V + v]);
    for (int v = 0; v < V; ++v) z += std::exp(logits[t * V + v] - mx);
    const double ref = mx + std::log(z) - logits[t * V + tgt[t]];
    EXPECT_NEAR(nll[t], ref, 1e-4);
    sum += ref;
  }
  EXPECT_NEAR(ls.nll, sum, 1e-3);
  KVCache cache = m.exec.make_cache(T);
  std::vector<float> step(V);
  m.exec.forward_decode(tok.data(), 4, cache, step.data());
  EXPECT_EQ(cache.prefix, P);
  EXPECT_EQ(cache.len, P + 4);
  for (int v = 0; v < V; ++v) EXPECT_NEAR(step[v], logits[3 * V + v], 1e-4);
  for (int t = 4; t < T; ++t) {
    m.exec.forward_decode(tok.data() + t, 1, cache, step.data());
    for (int v = 0; v < V; ++v) EXPECT_NEAR(step[v], logits[t * V + v], 1e-4) << "t=" << t;
  }
  m.exec.remove_hooks(&prefix);
  std::vector<float> zero_prefix((size_t)T * V);
  m.exec.forward_logits(tok.data(), T, zero_prefix.data());
  EXPECT_NE(zero_prefix, plain);
  EXPECT_NE(zero_prefix, logits);
}

// With prefix rows the memory plan still holds (the step uses most of it, never more), and
// gradients over dead activations equal gradients in their own buffer.
TEST(PrefixRows, MemoryPlanAndGradientsInActivations) {
  ModelConfig cfg = tiny(3, true);
  cfg.dim = 48;
  cfg.n_heads = 4;
  cfg.multiple_of = 32;
  ModelDims d = resolve_dims(cfg, 13);
  ModelRun own(cfg, d), shared(cfg, d);
  PrefixHooks a(4, d.dim, 12), b(4, d.dim, 12);
  own.exec.add_hooks(&a);
  shared.exec.add_hooks(&b);
  own.exec.set_prefix_rows(4);
  shared.exec.set_prefix_rows(4);
  shared.exec.set_grads_in_activations(true);
  auto tok = ids(3 * 20, 13), tgt = ids(3 * 20, 14);
  own.params().zero_grads();
  LossSum la = own.exec.forward_backward(tok.data(), tgt.data(), 3, 20, 0.01f);
  LossSum lb = shared.exec.forward_backward(tok.data(), tgt.data(), 3, 20, 0.01f);
  EXPECT_EQ(la.nll, lb.nll);
  EXPECT_EQ(own.params().host_grads(), shared.params().host_grads());
  EXPECT_EQ(a.grad, b.grad);
  EXPECT_LE(own.exec.activation_bytes_high_water(), own.exec.activation_bytes(3, 20));
  EXPECT_GE((double)own.exec.activation_bytes_high_water(), 0.8 * own.exec.activation_bytes(3, 20));
}

TEST(PrefixRows, StemLayersRefuseThem) {
  ModelConfig cfg = tiny();
  cfg.ffn = "stem";
  ModelRun m(cfg, resolve_dims(cfg, 13));
  m.exec.set_prefix_rows(2);
  auto tok = ids(4, 15);
  try {
    m.exec.forward_loss(tok.data(), tok.data(), 1, 4);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prefix rows"), std::string::npos) << e.what();
  }
}

// Frozen weights: no gradient and no weight-gradient matmul; every other gradient is bitwise what
// the fully trainable model computes; gradients over dead activations agree too.
TEST(Frozen, WeightsGetNoGradientAndSkipTheirMatmul) {
  ModelConfig cfg = tiny();
  ModelDims d = resolve_dims(cfg, 13);
  for (bool in_activations : {false, true}) {
    ModelRun all(cfg, d), part(cfg, d);
    std::vector<std::string> frozen;
    for (int id : part.params().ids()) {
      const std::string& name = part.params().info(id).name;
      if (name.rfind("layers.1.", 0) == 0 || name == "norm.weight") {
        part.params().set_trainable(id, false);
        frozen.push_back(name);
      }
    }
    ASSERT_EQ(frozen.size(), 10u);  // 2 norms, 4 attention and 3 FFN weights of layer 1, and the final norm
    part.exec.set_grads_in_activations(in_activations);
    EXPECT_LT(part.params().grad_total(), all.params().grad_total());
    auto tok = ids(2 * 7, 16), tgt = ids(2 * 7, 17);
    all.params().zero_grads();
    part.exec.zero_grads();
    all.exec.forward_backward(tok.data(), tgt.data(), 2, 7, 0.1f);
    const uint64_t before = Linear::weight_grad_matmuls();
    part.exec.forward_backward(tok.data(), tgt.data(), 2, 7, 0.1f);
    // 3 blocks x 6 Linears (wq, wk, wv, wo, w13, w2) run weight-gradient matmuls, less block 1's.
    EXPECT_EQ(Linear::weight_grad_matmuls() - before, 2u * 6u);
    for (int id : part.params().ids()) {
      const std::string& name = part.params().info(id).name;
      const Tensor g = part.params().grad(id);
      if (std::find(frozen.begin(), frozen.end(), name) != frozen.end()) {
        EXPECT_EQ(g.data, nullptr) << name;
        continue;
      }
      const Tensor ref = all.params().grad(all.params().index(name));
      EXPECT_EQ(std::vector<float>(g.f32(), g.f32() + g.numel()), std::vector<float>(ref.f32(), ref.f32() + ref.numel()))
          << name << (in_activations ? " (in activations)" : "");
    }
  }
}

// Weights multiplied as one matrix (SwiGLU's w1 and w3) are frozen together: freezing one alone is
// an error naming both, not a silently missing gradient.
TEST(Frozen, StackedWeightsFreezeTogether) {
  ModelConfig cfg = tiny();
  ModelRun m(cfg, resolve_dims(cfg, 13));
  m.params().set_trainable(m.params().index("layers.0.feed_forward.w3.weight"), false);
  auto tok = ids(6, 20);
  try {
    m.exec.forward_backward(tok.data(), tok.data(), 1, 6, 1.0f);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("freeze or train them together"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layers.0.feed_forward.w1.weight"), std::string::npos) << e.what();
  }
  m.params().set_trainable(m.params().index("layers.0.feed_forward.w1.weight"), false);
  EXPECT_NO_THROW(m.exec.forward_backward(tok.data(), tok.data(), 1, 6, 1.0f));
}

// Parameters added between steps: the executor places and zeroes the gradients of the new layout
// (a parameter no block reads gets no gradient, and the others' are bitwise as before).
TEST(Layout, ChangesBetweenStepsAreFollowed) {
  ModelConfig cfg = tiny();
  ModelDims d = resolve_dims(cfg, 13);
  ModelRun a(cfg, d), b(cfg, d);
  b.exec.set_grads_in_activations(true);
  auto tok = ids(2 * 6, 18), tgt = ids(2 * 6, 19);
  a.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 1.0f);
  b.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 1.0f);
  const uint64_t epoch = b.exec.memory_epoch();
  ParamSpec extra;
  extra.name = "layers.1.extra.weight";
  extra.shape = {5, 7};
  extra.init = ParamInit::ones();
  const int id = b.params().add(extra, b.params().index("layers.1.feed_forward.w2.weight"));
  EXPECT_NE(b.exec.memory_epoch(), epoch);
  a.params().zero_grads();
  LossSum la = a.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 1.0f);
  LossSum lb = b.exec.forward_backward(tok.data(), tgt.data(), 2, 6, 1.0f);
  EXPECT_EQ(la.nll, lb.nll);
  for (int pid : a.params().ids()) {
    const std::string& name = a.params().info(pid).name;
    const Tensor ga = a.params().grad(pid), gb = b.params().grad(b.params().index(name));
    EXPECT_EQ(std::vector<float>(ga.f32(), ga.f32() + ga.numel()), std::vector<float>(gb.f32(), gb.f32() + gb.numel()))
        << name;
  }
  const Tensor ge = b.params().grad(id);
  EXPECT_EQ(std::vector<float>(ge.f32(), ge.f32() + ge.numel()), std::vector<float>(35, 0.0f));
}

// Several sequences decoded in step through one KV cache give each one's logits as decoding it
// alone does: prefill of 5 tokens, then 4 single tokens, with and without prefix rows.
TEST(BatchedDecoding, EachSequenceAsAlone) {
  ModelConfig cfg = tiny();
  ModelDims d = resolve_dims(cfg, 13);
  const int B = 3, T = 9, V = 13, prefill = 5;
  for (int P : {0, 2}) {
    ModelRun m(cfg, d);
    PrefixHooks prefix(P, d.dim, 11);
    if (P > 0) {
      m.exec.add_hooks(&prefix);
      m.exec.set_prefix_rows(P);
    }
    const auto tok = ids(B * T, 21);  // sequence b: tok[b*T, (b+1)*T)
    std::vector<std::vector<float>> alone(B);  // per sequence: the logits of each decode call, in turn
    for (int b = 0; b < B; ++b) {
      KVCache cache = m.exec.make_cache(T);
      std::vector<float> step(V);
      m.exec.forward_decode(tok.data() + b * T, prefill, cache, step.data());
      alone[b] = step;
      for (int t = prefill; t < T; ++t) {
        m.exec.forward_decode(tok.data() + b * T + t, 1, cache, step.data());
        alone[b].insert(alone[b].end(), step.begin(), step.end());
      }
    }
    KVCache cache = m.exec.make_cache(T, B);
    std::vector<int32_t> in((size_t)B * prefill);
    for (int b = 0; b < B; ++b) std::copy_n(tok.begin() + b * T, prefill, in.begin() + b * prefill);
    std::vector<float> step((size_t)B * V);
    for (int call = 0; call <= T - prefill; ++call) {
      if (call == 0) {
        m.exec.forward_decode(in.data(), B, prefill, cache, step.data());
      } else {
        std::vector<int32_t> next(B);
        for (int b = 0; b < B; ++b) next[b] = tok[b * T + prefill + call - 1];
        m.exec.forward_decode(next.data(), B, 1, cache, step.data());
      }
      for (int b = 0; b < B; ++b)
        for (int v = 0; v < V; ++v)
          ASSERT_NEAR(step[b * V + v], alone[b][call * V + v], 1e-5) << "P " << P << " call " << call << " seq " << b;
    }
    EXPECT_EQ(cache.len, P + T);
    EXPECT_EQ(cache.prefix, P);
    std::vector<int32_t> one(B);
    EXPECT_THROW(m.exec.forward_decode(one.data(), B - 1, 1, cache, step.data()), Error);  // not the cache's batch
  }
}

// Decoding keeps nothing per layer: its step memory is the same for 2 and 6 layers (and below a
// full forward's of the same rows, which keeps each block's output).
TEST(BatchedDecoding, StepMemoryDoesNotGrowWithLayers) {
  std::vector<size_t> bytes;
  for (int layers : {2, 6}) {
    ModelConfig cfg = tiny();
    cfg.n_layers = layers;
    ModelRun m(cfg, resolve_dims(cfg, 13));
    const int B = 4, T = 7;
    const auto tok = ids(B * T, 5);
    KVCache cache = m.exec.make_cache(T, B);
    std::vector<float> logits((size_t)B * 13);
    m.exec.forward_decode(tok.data(), B, T, cache, logits.data());
    bytes.push_back(m.exec.step_memory_bytes());
    if (layers == 6) {
      ModelRun full(cfg, resolve_dims(cfg, 13));
      const auto tgt = ids(B * T, 6);
      full.exec.forward_loss(tok.data(), tgt.data(), B, T);
      EXPECT_LT(bytes.back(), full.exec.step_memory_bytes());
    }
  }
  EXPECT_EQ(bytes[0], bytes[1]);
}
