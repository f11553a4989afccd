// Whole-model tests: finite-difference gradients of a tiny transformer, decoding with a KV cache
// against the full forward, init properties and parameter accounting.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/exec/executor.h"
#include "lingua/exec/testing.h"
#include "lingua/model/transformer.h"

using namespace lingua;
using lingua::test_util::random_ids;

namespace {

ModelConfig tiny_config(int kv_heads, bool tying) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = 2;
  c.n_heads = 3;
  c.n_kv_heads = kv_heads;
  c.multiple_of = 4;
  c.vocab_size = 13;
  c.max_seqlen = 16;
  c.weight_tying = tying;
  c.init_std_factor = "current_depth";
  c.seed = 7;
  return c;
}

void check_model_gradients(int kv_heads, bool tying) {
  ModelConfig cfg = tiny_config(kv_heads, tying);
  ModelDims d = resolve_dims(cfg, cfg.vocab_size);
  Transformer m(cfg, d);
  Executor ex(m);
  const int B = 2, T = 5;
  auto tok = random_ids(B * T, d.vocab, 1);
  auto tgt = random_ids(B * T, d.vocab, 2);
  tgt[3] = -1;  // an ignored position
  const float scale = 0.1f;
  m.params().zero_grads();
  ex.forward_backward(tok.data(), tgt.data(), B, T, scale);
  std::vector<float> grad = m.params().host_grads();
  auto loss = [&] { return scale * ex.forward_loss(tok.data(), tgt.data(), B, T).nll; };
  std::mt19937 g(3);
  int checked = 0;
  for (int id : m.params().ids()) {
    const ParamInfo& p = m.params().info(id);
    // A few random entries of every parameter tensor.
    for (int k = 0; k < 6; ++k) {
      const int64_t e = (int64_t)(g() % p.numel), i = p.grad_offset + e;
      float* w = m.params().param(id).f32() + e;
      float orig = *w, eps = 1e-2f;
      *w = orig + eps;
      double lp = loss();
      *w = orig - eps;
      double lm = loss();
      *w = orig;
      double fd = (lp - lm) / (2 * eps);
      EXPECT_NEAR(grad[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << p.name << " entry " << e;
      ++checked;
    }
  }
  EXPECT_GT(checked, 60);
}

}  // namespace

TEST(Transformer, GradientsMatchFiniteDifferences) { check_model_gradients(3, false); }
TEST(Transformer, GradientsMatchFiniteDifferencesGqaTied) { check_model_gradients(1, true); }

TEST(Transformer, GradientsAccumulateAcrossMicroBatches) {
  ModelConfig cfg = tiny_config(3, false);
  Transformer m(cfg, resolve_dims(cfg, 13));
  Executor ex(m);
  auto tok = random_ids(8, 13, 4), tgt = random_ids(8, 13, 5);
  m.params().zero_grads();
  ex.forward_backward(tok.data(), tgt.data(), 2, 4, 1.0f);
  std::vector<float> once = m.params().host_grads();
  ex.forward_backward(tok.data(), tgt.data(), 2, 4, 1.0f);
  for (int64_t i = 0; i < m.params().grad_total(); ++i) ASSERT_FLOAT_EQ(m.params().grads_data()[i], 2 * once[i]);
}

TEST(Transformer, RecomputingNormsGivesTheSameGradientsInLessMemory) {
  ModelConfig cfg = tiny_config(1, false);
  ModelConfig rc = cfg;
  rc.recompute_norms = true;
  Transformer m(cfg, resolve_dims(cfg, 13)), r(rc, resolve_dims(rc, 13));
  Executor em(m), er(r);
  auto tok = random_ids(2 * 9, 13, 4), tgt = random_ids(2 * 9, 13, 5);
  m.params().zero_grads();
  r.params().zero_grads();
  LossSum lm = em.forward_backward(tok.data(), tgt.data(), 2, 9, 1.0f);
  LossSum lr = er.forward_backward(tok.data(), tgt.data(), 2, 9, 1.0f);
  EXPECT_EQ(lm.nll, lr.nll);
  const std::vector<float> gm = m.params().host_grads(), gr = r.params().host_grads();
  ASSERT_EQ(gm.size(), gr.size());
  for (size_t i = 0; i < gm.size(); ++i) ASSERT_EQ(gm[i], gr[i]) << i;
  // Two [N, dim] per layer fewer, one shared more.
  EXPECT_EQ(em.activation_bytes(2, 9) - er.activation_bytes(2, 9),
            (size_t)(2 * cfg.n_layers - 1) * arena_bytes(2 * 9 * cfg.dim));
}

TEST(Transformer, ArenaSizeFormulaIsTight) {
  // Too small fails the step ("arena exhausted"); too large wastes memory: the step must use most
  // of what the formula reserves.
  ModelConfig cfg = tiny_config(1, false);
  cfg.dim = 48;
  cfg.n_heads = 4;
  cfg.multiple_of = 32;
  cfg.max_seqlen = 64;
  Transformer m(cfg, resolve_dims(cfg, 13));
  Executor ex(m);
  auto tok = random_ids(3 * 40, 13, 4), tgt = random_ids(3 * 40, 13, 5);
  ex.forward_backward(tok.data(), tgt.data(), 3, 40, 1.0f);
  EXPECT_LE(ex.activation_bytes_high_water(), ex.activation_bytes(3, 40));
  EXPECT_GE((double)ex.activation_bytes_high_water(), 0.8 * ex.activation_bytes(3, 40));
}

// Gradients kept over dead activations equal gradients in their own buffer, bit for bit, step
// after step (any overlap with live memory would change them), with evaluation calls of other
// shapes in between (the memory grows and the gradients move), and take less memory.
void check_grads_in_activations(ModelConfig cfg) {
  cfg.dim = 48;
  cfg.n_heads = 4;
  cfg.multiple_of = 32;
  cfg.max_seqlen = 64;
  ModelDims d = resolve_dims(cfg, 13);
  Transformer own_model(cfg, d), shared_model(cfg, d);
  Executor own(own_model), shared(shared_model);
  shared.set_grads_in_activations(true);
  EXPECT_TRUE(shared.grads_in_activations());
  for (int step = 0; step < 3; ++step) {
    const int B = 3, T = step == 2 ? 17 : 40;
    auto tok = random_ids(B * T, 13, 10 + step), tgt = random_ids(B * T, 13, 20 + step);
    own.zero_grads();
    shared.zero_grads();
    LossSum a = own.forward_backward(tok.data(), tgt.data(), B, T, 0.01f);
    LossSum b = shared.forward_backward(tok.data(), tgt.data(), B, T, 0.01f);
    EXPECT_EQ(a.nll, b.nll);
    const std::vector<float> ga = own_model.params().host_grads(), gb = shared_model.params().host_grads();
    for (size_t i = 0; i < ga.size(); ++i) ASSERT_EQ(ga[i], gb[i]) << "step " << step << " float " << i;
    // An evaluation of another shape between steps.
    auto etok = random_ids(5 * 30, 13, 30 + step);
    EXPECT_EQ(own.forward_loss(etok.data(), etok.data(), 5, 30).nll,
              shared.forward_loss(etok.data(), etok.data(), 5, 30).nll);
  }
  // Untied, most gradients fit over dead activations; a tied embedding's gradient is written
  // first (by the head), so all of them go past the activations: no saving, no loss either.
  const size_t grads = sizeof(float) * own_model.params().grad_total();
  if (cfg.weight_tying) EXPECT_LE(shared.step_memory_bytes(), own.step_memory_bytes() + grads);
  else EXPECT_LT(shared.step_memory_bytes(), own.step_memory_bytes() + grads / 2);
}

TEST(Transformer, GradientsInActivationsEqualOwnGradients) { check_grads_in_activations(tiny_config(1, false)); }
TEST(Transformer, GradientsInActivationsStem) {
  ModelConfig cfg = tiny_config(1, false);
  cfg.ffn = "stem";
  check_grads_in_activations(cfg);
}
TEST(Transformer, GradientsInActivationsTiedRecomputed) {
  ModelConfig cfg = tiny_config(2, true);
  cfg.recompute_norms = true;
  check_grads_in_activations(cfg);
}

TEST(Transformer, LossMatchesLogitsAndDecodeMatchesFullForward) {
  ModelConfig cfg = tiny_config(1, false);
  ModelDims d = resolve_dims(cfg, 13);
  Transformer model(cfg, d);
  Executor m(model);
  const int T = 9;
  auto tok = random_ids(T, d.vocab, 6), tgt = random_ids(T, d.vocab, 7);
  std::vector<float> logits((size_t)T * d.vocab);
  m.forward_logits(tok.data(), T, logits.data());
  // The loss equals the log-softmax of the full logits.
  std::vector<float> nll(T);
  LossSum ls = m.forward_loss(tok.data(), tgt.data(), 1, T, nll.data());
  double sum = 0;
  for (int t = 0; t < T; ++t) {
    double mx = -1e30, z = 0;
    for (int v = 0; v < d.vocab; ++v) mx = std::max(mx, (double)logits[t * d.vocab + v]);
    for (int v = 0; v < d.vocab; ++v) z += std::exp(logits[t * d.vocab + v] - mx);
    double ref = mx + std::log(z) - logits[t * d.vocab + tgt[t]];
    EXPECT_NEAR(nll[t], ref, 1e-4);
    sum += ref;
  }
  EXPECT_NEAR(ls.nll, sum, 1e-3);
  EXPECT_EQ(ls.tokens, T);
  // Prefill 4 tokens, then decode the rest one by one: each step's logits equal the full forward's.
  KVCache cache(d, 16);
  std::vector<float> step(d.vocab);
  m.forward_decode(tok.data(), 4, cache, step.data());
  for (int v = 0; v < d.vocab; ++v) EXPECT_NEAR(step[v], logits[3 * d.vocab + v], 1e-4);
  for (int t = 4; t < T; ++t) {
    m.forward_decode(tok.data() + t, 1, cache, step.data());
    for (int v = 0; v < d.vocab; ++v) EXPECT_NEAR(step[v], logits[t * d.vocab + v], 1e-4) << "t=" << t;
  }
  EXPECT_EQ(cache.len, T);
}

TEST(Transformer, InitIsDeterministicByNameAndFollowsStd) {
  ModelConfig cfg = tiny_config(3, false);
  cfg.dim = 64;
  cfg.n_heads = 4;
  cfg.n_kv_heads = 4;
  cfg.init_std_factor = "global_depth";
  ModelDims d = resolve_dims(cfg, 13);
  Transformer a(cfg, d), b(cfg, d);
  EXPECT_EQ(a.params().host_values(), b.params().host_values());
  // A different seed changes the weights.
  ModelConfig cfg2 = cfg;
  cfg2.seed = 8;
  Transformer c(cfg2, d);
  EXPECT_NE(a.params().params_data()[a.params().info(a.params().index("layers.0.attention.wq.weight")).offset],
            c.params().params_data()[c.params().info(c.params().index("layers.0.attention.wq.weight")).offset]);
  // Standard deviations and truncation at 3 std, per Lingua's rules.
  auto stats = [&](const char* name, double want_std) {
    const ParamInfo& p = a.params().info(a.params().index(name));
    const float* w = a.params().params_data() + p.offset;
    double s2 = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      s2 += (double)w[i] * w[i];
      ASSERT_LE(std::fabs(w[i]), 3 * want_std * 1.0001) << name;
    }
    // Truncation at 3 std shrinks the std by ~1.3%.
    EXPECT_NEAR(std::sqrt(s2 / p.numel), want_std * 0.9866, want_std * 0.05) << name;
  };
  double factor = std::sqrt(2.0 * (cfg.n_layers + 1));
  stats("layers.0.attention.wq.weight", 1 / std::sqrt(64.0));
  stats("layers.1.attention.wo.weight", 1 / std::sqrt(64.0) / factor);
  stats("layers.0.feed_forward.w1.weight", 1 / std::sqrt(64.0));
  stats("layers.1.feed_forward.w2.weight", 1 / std::sqrt((double)d.hidden) / factor);
  stats("tok_embeddings.weight", 1 / std::sqrt(64.0));
  const ParamInfo& n = a.params().info(a.params().index("norm.weight"));
  EXPECT_EQ(a.params().params_data()[n.offset], 1.0f);
}

TEST(Transformer, DimsAndParameterAccounting) {
  EXPECT_EQ(ffn_hidden_dim(1024, 256, std::nullopt), 2816);
  EXPECT_EQ(ffn_hidden_dim(2048, 256, std::nullopt), 5632);
  EXPECT_EQ(ffn_hidden_dim(4096, 256, 1.3), 14336);
  ModelConfig cfg = tiny_config(1, false);
  ModelDims d = resolve_dims(cfg, 13);
  Transformer m(cfg, d);
  ParamCounts pc = m.param_counts();
  int64_t D = 12, hd = 4, V = 13, H = d.hidden;
  int64_t per_layer = 2 * D * 3 * hd + 2 * D * 1 * hd + 3 * D * H + 2 * D;
  EXPECT_EQ(pc.total, V * D * 2 + 2 * per_layer + D);
  EXPECT_EQ(pc.embedding, V * D);
  EXPECT_EQ(pc.active_non_embedding, V * D + 2 * per_layer + D);
  EXPECT_DOUBLE_EQ(m.flops_per_token(16), 6.0 * pc.active_non_embedding + 6.0 * 2 * 12 * 16);
  cfg.weight_tying = true;
  Transformer t(cfg, resolve_dims(cfg, 13));
  EXPECT_EQ(t.param_counts().total, V * D + 2 * per_layer + D);
  EXPECT_EQ(t.param_counts().active_non_embedding, V * D + 2 * per_layer + D);
}

TEST(Transformer, ConfigErrorsNameTheKey) {
  ModelConfig c = tiny_config(2, false);  // 3 heads, 2 kv heads
  try {
    resolve_dims(c, 13);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.n_kv_heads"), std::string::npos);
  }
  c = tiny_config(3, false);
  c.dim = 13;
  EXPECT_THROW(resolve_dims(c, 13), Error);
  c = tiny_config(3, false);
  c.vocab_size = 5;
  EXPECT_THROW(resolve_dims(c, 13), Error);
  c = tiny_config(3, false);
  c.ffn = "nope";
  try {
    Transformer t(c, resolve_dims(c, 13));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("swiglu"), std::string::npos);
  }
}
