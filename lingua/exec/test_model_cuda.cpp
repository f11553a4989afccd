// Whole-model GPU tests: one training micro-batch on CUDA (bf16 compute, fp32 master weights)
// against the fp32 CPU reference, loss and every gradient; determinism of the GPU step; decoding
// with the KV cache on the GPU. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/core/cuda.h"
#include "lingua/exec/testing.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU"

// head_dim 64 takes the cuDNN attention path; head_dim 12 the fallback kernel.
ModelConfig small_config(int dim, int heads, int kv_heads, bool tying) {
  ModelConfig c;
  c.dim = dim;
  c.n_layers = 3;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.multiple_of = 32;
  c.vocab_size = 301;
  c.max_seqlen = 64;
  c.weight_tying = tying;
  c.init_std_factor = "current_depth";
  c.seed = 11;
  return c;
}

std::vector<float> to_host(const Tensor& t) {
  std::vector<float> h(t.numel());
  Tensor dst = t;
  dst.data = h.data();
  dst.device = Device::cpu;
  copy_tensor(dst, t);
  return h;
}

struct StepResult {
  LossSum loss;
  std::vector<std::vector<float>> grads;  // per parameter, host
};

StepResult run_step(ModelRun& m, const std::vector<int32_t>& tok, const std::vector<int32_t>& tgt, int B, int T) {
  StepResult r;
  m.params().zero_grads();
  // Two micro-batches accumulate, as with grad_acc_steps = 2.
  r.loss = m.exec.forward_backward(tok.data(), tgt.data(), B, T, 0.5f / (B * T));
  LossSum l2 = m.exec.forward_backward(tok.data() + B * T, tgt.data() + B * T, B, T, 0.5f / (B * T));
  r.loss.nll += l2.nll;
  r.loss.tokens += l2.tokens;
  for (int i = 0; i < m.params().size(); ++i) {
    const Tensor g = m.params().grad(i);
    r.grads.push_back(g.data ? to_host(g) : std::vector<float>());
  }
  return r;
}

// tol: relative L2 error allowed per gradient. The GPU rounds activations and the input gradients
// of the matmuls to bf16 (as PyTorch's autocast does); 2.5e-2 holds with a few dozen tokens.
void check_step_matches_cpu(const ModelConfig& cfg, int B, int T, double tol = 2.5e-2) {
  ModelDims d = resolve_dims(cfg, cfg.vocab_size);
  auto tok = random_ids(2 * B * T, d.vocab, 1), tgt = random_ids(2 * B * T, d.vocab, 2);
  tgt[5] = -1;  // ignored positions
  tgt[B * T + 1] = -1;
  ModelRun cpu(cfg, d), gpu(cfg, d, Device::cuda);
  ASSERT_EQ(gpu.model.act_dtype(), DType::bf16);
  StepResult rc = run_step(cpu, tok, tgt, B, T);
  StepResult rg = run_step(gpu, tok, tgt, B, T);
  // The arena size formula counts bf16 activations at their size: the step uses most of it.
  EXPECT_GE((double)gpu.exec.activation_bytes_high_water(), 0.75 * gpu.exec.activation_bytes(B, T));
  EXPECT_LT(gpu.exec.activation_bytes(B, T), cpu.exec.activation_bytes(B, T));
  EXPECT_EQ(rg.loss.tokens, rc.loss.tokens);
  EXPECT_NEAR(rg.loss.nll / rg.loss.tokens, rc.loss.nll / rc.loss.tokens, 1e-2 * rc.loss.nll / rc.loss.tokens);
  for (int i = 0; i < cpu.params().size(); ++i) {
    const std::string& name = cpu.params().info(i).name;
    const double err = rel_l2(rg.grads[i], rc.grads[i]);
    EXPECT_LT(err, tol) << name;
    // Not vacuous: the gradient is not zero.
    double norm = 0;
    for (float g : rc.grads[i]) norm += (double)g * g;
    EXPECT_GT(norm, 0) << name;
  }
  // Same seed, same batch: the GPU step is bitwise reproducible.
  StepResult rg2 = run_step(gpu, tok, tgt, B, T);
  EXPECT_EQ(rg2.loss.nll, rg.loss.nll);
  for (int i = 0; i < gpu.params().size(); ++i)
    EXPECT_TRUE(rg2.grads[i] == rg.grads[i]) << gpu.params().info(i).name << " differs between two identical steps";
}

}  // namespace

TEST(TransformerCuda, StepMatchesCpuCudnnAttentionGqa) {
  SKIP_WITHOUT_GPU();
  check_step_matches_cpu(small_config(128, 2, 1, false), 3, 37);
}

TEST(TransformerCuda, StepMatchesCpuFallbackAttentionTied) {
  SKIP_WITHOUT_GPU();
  check_step_matches_cpu(small_config(36, 3, 3, true), 2, 33);
}

// One short sequence (T = 1 would leave dq = dk = 0 exactly: nothing to compare).
// With 3 tokens nothing averages the bf16 rounding out: wq and wk gradients of the second layer
// (softmax over 1-3 positions, much cancellation) measured 2.7e-2.
TEST(TransformerCuda, OneShortSequence) {
  SKIP_WITHOUT_GPU();
  check_step_matches_cpu(small_config(128, 2, 2, false), 1, 3, 4e-2);
}

TEST(TransformerCuda, RecomputingNormsGivesTheSameGradients) {
  SKIP_WITHOUT_GPU();
  ModelConfig cfg = small_config(128, 2, 1, false), rc = cfg;
  rc.recompute_norms = true;
  ModelDims d = resolve_dims(cfg, cfg.vocab_size);
  auto tok = random_ids(2 * 2 * 37, d.vocab, 1), tgt = random_ids(2 * 2 * 37, d.vocab, 2);
  ModelRun m(cfg, d, Device::cuda), r(rc, d, Device::cuda);
  StepResult a = run_step(m, tok, tgt, 2, 37), b = run_step(r, tok, tgt, 2, 37);
  EXPECT_EQ(a.loss.nll, b.loss.nll);
  for (int i = 0; i < m.params().size(); ++i)
    EXPECT_TRUE(a.grads[i] == b.grads[i]) << m.params().info(i).name;
  EXPECT_LT(r.exec.activation_bytes(2, 37), m.exec.activation_bytes(2, 37));
}

// Gradients over dead activations equal gradients in their own buffer, bit for bit, on the GPU
// (bf16 activations change the sizes the plan works with), with an evaluation of another shape
// between steps.
ModelConfig stem(ModelConfig c, std::vector<int> layers = {}) {
  c.ffn = "stem";
  if (!layers.empty()) c.stem_layers = layers;
  return c;
}

TEST(TransformerCuda, GradientsInActivationsEqualOwnGradients) {
  SKIP_WITHOUT_GPU();
  for (const ModelConfig& cfg : {small_config(128, 2, 1, false), small_config(128, 2, 1, true),
                                 stem(small_config(128, 2, 1, false))}) {
    const std::string what = std::string(cfg.weight_tying ? " (tied)" : "") + " " + cfg.ffn;
    ModelDims d = resolve_dims(cfg, cfg.vocab_size);
    ModelRun own_run(cfg, d, Device::cuda), shared_run(cfg, d, Device::cuda);
    Executor &own = own_run.exec, &shared = shared_run.exec;
    shared.set_grads_in_activations(true);
    for (int step = 0; step < 2; ++step) {
      const int B = 3, T = 37 - 8 * step;
      auto tok = random_ids(B * T, d.vocab, 3 + step), tgt = random_ids(B * T, d.vocab, 5 + step);
      own.zero_grads();
      shared.zero_grads();
      LossSum a = own.forward_backward(tok.data(), tgt.data(), B, T, 0.01f);
      LossSum b = shared.forward_backward(tok.data(), tgt.data(), B, T, 0.01f);
      EXPECT_EQ(a.nll, b.nll);
      for (int i = 0; i < own_run.params().size(); ++i)
        EXPECT_TRUE(to_host(own_run.params().grad(i)) == to_host(shared_run.params().grad(i)))
            << own_run.params().info(i).name << what << " step " << step;
      auto etok = random_ids(4 * 41, d.vocab, 9);
      EXPECT_EQ(own.forward_loss(etok.data(), etok.data(), 4, 41).nll,
                shared.forward_loss(etok.data(), etok.data(), 4, 41).nll);
    }
    if (!cfg.weight_tying) {
      EXPECT_LT(shared.step_memory_bytes(), own.step_memory_bytes() + sizeof(float) * own_run.params().grad_total())
          << what;
    }
  }
}

// STEM layers on the GPU (bf16 gather, bf16 scatter-add input, f32 table gradient) against the CPU.
TEST(TransformerCuda, StemStepMatchesCpu) {
  SKIP_WITHOUT_GPU();
  check_step_matches_cpu(stem(small_config(128, 2, 1, false)), 3, 37);
  check_step_matches_cpu(stem(small_config(36, 3, 3, true), {0, 2}), 2, 33);
}

void check_decoding(const ModelConfig& cfg) {
  ModelDims d = resolve_dims(cfg, cfg.vocab_size);
  ModelRun cpu_run(cfg, d), gpu_run(cfg, d, Device::cuda);
  Executor &cpu = cpu_run.exec, &gpu = gpu_run.exec;
  const int T = 21;
  auto tok = random_ids(T, d.vocab, 9);
  std::vector<float> full_cpu((size_t)T * d.vocab), full_gpu((size_t)T * d.vocab);
  cpu.forward_logits(tok.data(), T, full_cpu.data());
  gpu.forward_logits(tok.data(), T, full_gpu.data());
  EXPECT_LT(rel_l2(full_gpu, full_cpu), 2e-2);
  // Prefill 7 tokens, then one at a time: the logits of each step match the full forward's row.
  KVCache cache = gpu.make_cache(T);
  std::vector<float> logits(d.vocab);
  gpu.forward_decode(tok.data(), 7, cache, logits.data());
  std::vector<float> row(full_gpu.begin() + 6 * d.vocab, full_gpu.begin() + 7 * d.vocab);
  EXPECT_LT(rel_l2(logits, row), 2e-2);
  for (int t = 7; t < T; ++t) {
    gpu.forward_decode(tok.data() + t, 1, cache, logits.data());
    std::vector<float> r(full_gpu.begin() + (size_t)t * d.vocab, full_gpu.begin() + (size_t)(t + 1) * d.vocab);
    EXPECT_LT(rel_l2(logits, r), 2e-2) << "position " << t;
  }
  // Three sequences in step through one cache: each as the full forward of it alone.
  const int B = 3;
  auto many = random_ids(B * T, d.vocab, 10);
  std::vector<std::vector<float>> full(B, std::vector<float>((size_t)T * d.vocab));
  for (int b = 0; b < B; ++b) gpu.forward_logits(many.data() + b * T, T, full[b].data());
  KVCache batch = gpu.make_cache(T, B);
  std::vector<int32_t> in((size_t)B * 7);
  for (int b = 0; b < B; ++b) std::copy_n(many.begin() + b * T, 7, in.begin() + b * 7);
  std::vector<float> out((size_t)B * d.vocab);
  gpu.forward_decode(in.data(), B, 7, batch, out.data());
  for (int t = 7; t <= T; ++t) {
    for (int b = 0; b < B; ++b) {
      std::vector<float> got(out.begin() + (size_t)b * d.vocab, out.begin() + (size_t)(b + 1) * d.vocab);
      std::vector<float> r(full[b].begin() + (size_t)(t - 1) * d.vocab, full[b].begin() + (size_t)t * d.vocab);
      EXPECT_LT(rel_l2(got, r), 2e-2) << "batched, sequence " << b << " position " << t - 1;
    }
    if (t == T) break;
    std::vector<int32_t> next(B);
    for (int b = 0; b < B; ++b) next[b] = many[b * T + t];
    gpu.forward_decode(next.data(), B, 1, batch, out.data());
  }
}

TEST(TransformerCuda, DecodingWithCacheMatchesFullForward) {
  SKIP_WITHOUT_GPU();
  check_decoding(small_config(128, 2, 1, false));
  check_decoding(stem(small_config(128, 2, 1, false)));
}

// Writes `values` ([P, dim]) into every sequence's prefix rows before block 0, on either device
// (a device-to-device copy on the GPU: it can be captured in a graph).
struct PrefixValues : LayerHooks {
  std::vector<float> host;
  DeviceBuffer dev;
  Tensor values;
  PrefixValues(int P, int D, Device device, uint32_t seed) : host(random_vector((size_t)P * D, seed, -1.0f, 1.0f)) {
    values = Tensor(host.data(), {(int64_t)P, (int64_t)D});
    if (device == Device::cuda) {
      dev = DeviceBuffer(host.size() * sizeof(float));
      copy_to_device(dev.data(), host.data(), host.size() * sizeof(float));
      values = Tensor(dev.data(), {(int64_t)P, (int64_t)D}, DType::f32, Device::cuda);
    }
  }
  void before_forward(int l, const Tensor& x, const StepContext& ctx) override {
    if (l != 0 || ctx.seq.prefix == 0) return;
    for (int b = 0; b < ctx.seq.B; ++b) copy_row_blocks(x, 0, (int64_t)b * ctx.seq.S(), values, 0, 0, 1, ctx.seq.prefix);
  }
};

// Prefix rows on the GPU (RoPE on the token rows only, the head on the token rows) against the
// CPU: the loss and every gradient; and decoding with the prefix in the KV cache against the full
// forward.
TEST(TransformerCuda, PrefixRowsMatchCpu) {
  SKIP_WITHOUT_GPU();
  for (const ModelConfig& cfg : {small_config(128, 2, 1, false), small_config(36, 3, 3, true)}) {
    ModelDims d = resolve_dims(cfg, cfg.vocab_size);
    const int P = 5, B = 2, T = 29;
    ModelRun cpu(cfg, d), gpu(cfg, d, Device::cuda);
    PrefixValues pc(P, d.dim, Device::cpu, 21), pg(P, d.dim, Device::cuda, 21);
    cpu.exec.add_hooks(&pc);
    gpu.exec.add_hooks(&pg);
    cpu.exec.set_prefix_rows(P);
    gpu.exec.set_prefix_rows(P);
    auto tok = random_ids(2 * B * T, d.vocab, 3), tgt = random_ids(2 * B * T, d.vocab, 4);
    StepResult rc = run_step(cpu, tok, tgt, B, T), rg = run_step(gpu, tok, tgt, B, T);
    EXPECT_EQ(rg.loss.tokens, 2 * B * T);
    EXPECT_NEAR(rg.loss.nll / rg.loss.tokens, rc.loss.nll / rc.loss.tokens, 1e-2 * rc.loss.nll / rc.loss.tokens);
    for (int i = 0; i < cpu.params().size(); ++i) EXPECT_LT(rel_l2(rg.grads[i], rc.grads[i]), 2.5e-2) << cpu.params().info(i).name;
    std::vector<float> full((size_t)T * d.vocab), logits(d.vocab);
    gpu.exec.forward_logits(tok.data(), T, full.data());
    KVCache cache = gpu.exec.make_cache(T);
    gpu.exec.forward_decode(tok.data(), 6, cache, logits.data());
    EXPECT_EQ(cache.len, P + 6);
    for (int t = 6; t <= T; ++t) {
      std::vector<float> row(full.begin() + (size_t)(t - 1) * d.vocab, full.begin() + (size_t)t * d.vocab);
      EXPECT_LT(rel_l2(logits, row), 2e-2) << "position " << t - 1;
      if (t < T) gpu.exec.forward_decode(tok.data() + t, 1, cache, logits.data());
    }
  }
}

// Frozen weights on the GPU: no gradient, and every other gradient bitwise what the trainable
// model computes.
TEST(TransformerCuda, FrozenWeightsSkipTheirGradients) {
  SKIP_WITHOUT_GPU();
  ModelConfig cfg = small_config(128, 2, 1, false);
  ModelDims d = resolve_dims(cfg, cfg.vocab_size);
  ModelRun all(cfg, d, Device::cuda), part(cfg, d, Device::cuda);
  for (int id : part.params().ids())
    if (part.params().info(id).name.rfind("layers.1.", 0) == 0) part.params().set_trainable(id, false);
  auto tok = random_ids(2 * 2 * 31, d.vocab, 5), tgt = random_ids(2 * 2 * 31, d.vocab, 6);
  StepResult a = run_step(all, tok, tgt, 2, 31), b = run_step(part, tok, tgt, 2, 31);
  EXPECT_EQ(a.loss.nll, b.loss.nll);
  for (int id : part.params().ids()) {
    const std::string& name = part.params().info(id).name;
    if (name.rfind("layers.1.", 0) == 0) EXPECT_TRUE(b.grads[id].empty()) << name;
    else EXPECT_TRUE(a.grads[id] == b.grads[id]) << name;
  }
}
