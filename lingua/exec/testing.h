#pragma once
// For tests: a model and the executor that runs it, built together (the executor needs the
// model on its device first).
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/exec/executor.h"

namespace lingua::test_util {

struct ModelRun {
  Transformer model;
  Executor exec;
  // prepare: runs on the host model before it moves to the device (e.g. sharding its weights).
  ModelRun(const ModelConfig& cfg, const ModelDims& dims, Device device = Device::cpu,
           const std::function<void(Transformer&)>& prepare = {})
      : model(cfg, dims), exec((prepare ? prepare(model) : void(), model.to_device(device), model)) {}
  ParamStore& params() { return model.params(); }
};

// The model's init (from init_seed) plus N(0, sd) noise on every parameter, as training leaves it
// (every weight away from its init, no factor zero as LowRank's w2.b starts).
inline void noisy_init(Transformer& t, uint64_t init_seed, float sd = 0.3f) {
  t.init_weights(init_seed);
  std::mt19937 rng(17);
  std::normal_distribution<float> noise(0.0f, sd);
  for (int id : t.params().ids()) {
    std::vector<float> w = t.params().host_param(id);
    for (float& x : w) x += noise(rng);
    t.params().set_param(id, w.data());
  }
  t.params().values_written();
}

// One training micro-batch's loss (scale 1 / (B T)) and every parameter's gradient, copied to the
// host in the store's id order (empty for a frozen parameter): to compare a GPU step with the CPU's.
struct StepGrads {
  LossSum loss;
  std::vector<std::vector<float>> grads;
};
inline StepGrads step_grads(ModelRun& m, const std::vector<int32_t>& tok, const std::vector<int32_t>& tgt, int B,
                            int T) {
  m.params().zero_grads();
  StepGrads r;
  r.loss = m.exec.forward_backward(tok.data(), tgt.data(), B, T, 1.0f / (float)(B * T));
  for (int id : m.params().ids()) {
    const Tensor t = m.params().grad(id);
    std::vector<float> h(t.numel());
    if (t.data) copy_tensor(Tensor(h.data(), {t.numel()}), Tensor(t.data, {t.numel()}, DType::f32, t.device));
    r.grads.push_back(h);
  }
  return r;
}

// n token ids in [0, vocab), from a seeded std::mt19937.
inline std::vector<int32_t> random_ids(int n, int vocab, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = (int32_t)(g() % vocab);
  return v;
}

// The central finite difference (step 1e-2) of scale x the summed loss of [B, T] tokens with
// respect to element e of parameter id (CPU: fp32 weights edited in place, then restored; each
// edit is announced through values_written(), so caches of merged weights are remade).
inline double finite_difference(Executor& ex, int id, int64_t e, const std::vector<int32_t>& tok,
                                const std::vector<int32_t>& tgt, int B, int T, float scale) {
  ParamStore& store = ex.model().params();
  float* w = store.param(id).f32() + e;
  const float orig = *w, eps = 1e-2f;
  *w = orig + eps;
  store.values_written();
  const double lp = scale * ex.forward_loss(tok.data(), tgt.data(), B, T).nll;
  *w = orig - eps;
  store.values_written();
  const double lm = scale * ex.forward_loss(tok.data(), tgt.data(), B, T).nll;
  *w = orig;
  store.values_written();
  return (lp - lm) / (2 * eps);
}

// Every parameter's gradient of scale x the summed loss of one batch (B x T random tokens of
// [0, vocab)) against finite_difference at 3 random entries each (seeded by `seed`), and with
// `last_entry` a weight's (2-D or 3-D) last entry too. Returns the names of the parameters with an
// entry whose finite difference is above 1e-3 (what the check exercised).
inline std::vector<std::string> expect_gradients_match_finite_differences(ModelRun& m, int vocab, int B, int T,
                                                                          bool last_entry, uint32_t seed,
                                                                          const std::string& what) {
  const std::vector<int32_t> tok = random_ids(B * T, vocab, 6), tgt = random_ids(B * T, vocab, 7);
  const float scale = 0.1f;
  ParamStore& ps = m.params();
  ps.zero_grads();
  m.exec.forward_backward(tok.data(), tgt.data(), B, T, scale);
  const std::vector<float> grad = ps.host_grads();
  std::mt19937 r(seed);
  std::vector<std::string> moved;
  for (int id : ps.ids()) {
    const ParamInfo& p = ps.info(id);
    std::vector<int64_t> entries;
    for (int k = 0; k < 3; ++k) entries.push_back((int64_t)(r() % p.numel));
    if (last_entry && p.shape.size() >= 2) entries.push_back(p.numel - 1);
    for (int64_t e : entries) {
      const double f = finite_difference(m.exec, id, e, tok, tgt, B, T, scale);
      EXPECT_NEAR(grad[p.grad_offset + e], f, 2e-3 + 3e-2 * std::fabs(f)) << p.name << " entry " << e << " " << what;
      if (std::fabs(f) > 1e-3 && (moved.empty() || moved.back() != p.name)) moved.push_back(p.name);
    }
  }
  return moved;
}

// One sequence decoded with a KV cache (its first `first` tokens in one call, then one by one) gives
// the full forward's logits at every position from first - 1 on, within `tol`.
inline void expect_cached_decoding_equals_full_forward(Executor& ex, const std::vector<int32_t>& tok, int first,
                                                       int vocab, double tol, const std::string& what = "") {
  const int T = (int)tok.size();
  std::vector<float> full((size_t)T * vocab), step((size_t)vocab);
  ex.forward_logits(tok.data(), T, full.data());
  KVCache cache = ex.make_cache(T, 1);
  ex.forward_decode(tok.data(), 1, first, cache, step.data());
  for (int t = first - 1; t < T; ++t) {
    if (t >= first) ex.forward_decode(&tok[(size_t)t], 1, 1, cache, step.data());
    for (int v = 0; v < vocab; ++v)
      EXPECT_NEAR(step[(size_t)v], full[(size_t)t * vocab + v], tol) << what << " t " << t << " v " << v;
  }
}

}  // namespace lingua::test_util
