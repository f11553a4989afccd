// CUDA attention against the CPU reference (the op-test harness), for both paths (our fallback
// kernels and cuDNN's fused flash attention), forced through LINGUA_ATTENTION; and the GPU's own
// guarantees: determinism, causality, the paths' shared conventions, errors.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lingua/ops/attention/attention.h"
#include "lingua/ops/attention/cuda_internal.h"
#include "lingua/ops/backend_test.h"

using namespace lingua;
using namespace lingua::test_util;
namespace ai = lingua::attention_internal;

namespace {

struct Shape {
  int64_t B, T, S, H, KV, hd;
  int64_t q_size() const { return B * T * H * hd; }
  int64_t kv_size() const { return B * S * KV * hd; }
};

// Sets an environment variable for a scope, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) had_ = true, old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

double lse_tol(DType dt) { return dt == DType::bf16 ? 1e-3 : 1e-5; }

// q, k in [-2, 2) (seeds seed, seed + 1), v in [-1, 1) (seed + 2), in dt.
void declare_qkv(OpCase& k, Shape s, DType dt, uint32_t seed) {
  k.in("q", {s.B, s.T, s.H, s.hd}, dt).uniform(-2.0f, 2.0f, seed);
  k.in("k", {s.B, s.S, s.KV, s.hd}, dt).uniform(-2.0f, 2.0f, seed + 1);
  k.in("v", {s.B, s.S, s.KV, s.hd}, dt).uniform(-1.0f, 1.0f, seed + 2);
}

// out (0) or lse (1) of the CPU forward on the case's q, k, v.
std::vector<float> cpu_forward(const Values& in, Shape s, int which) {
  std::vector<float> out(s.q_size()), lse(s.B * s.H * s.T);
  attention_forward(Tensor(in["q"].data(), {s.B, s.T, s.H, s.hd}), Tensor(in["k"].data(), {s.B, s.S, s.KV, s.hd}),
                    Tensor(in["v"].data(), {s.B, s.S, s.KV, s.hd}), Tensor(out.data(), {s.B, s.T, s.H, s.hd}),
                    Tensor(lse.data(), {s.B, s.H, s.T}));
  return which == 0 ? out : lse;
}

// Forward, then backward from the CPU forward's out (in dt) and lse, under LINGUA_ATTENTION=mode;
// on the GPU, expects path `want` to run (Path::none: whichever).
std::vector<OpCase> attention_cases(Shape s, DType dt, const char* mode, ai::Path want, bool backward,
                                    uint32_t seed = 1) {
  const char* want_name = want == ai::Path::none ? "any" : want == ai::Path::cudnn ? "cudnn" : "fallback";
  const std::string label = std::string("LINGUA_ATTENTION=") + mode + ", expect " + want_name;
  std::vector<OpCase> cs;
  OpCase& f = cs.emplace_back("attention_forward", label);
  declare_qkv(f, s, dt, seed);
  f.out("out", {s.B, s.T, s.H, s.hd}, dt);
  f.out("lse", {s.B, s.H, s.T}).tol(lse_tol(dt));
  f.run = [mode, want](OpArgs& a) {
    ScopedEnv env("LINGUA_ATTENTION", mode);
    attention_forward(a["q"], a["k"], a["v"], a["out"], a["lse"]);
#ifdef LINGUA_CUDA
    if (a.device == Device::cuda && want != ai::Path::none) {
      EXPECT_EQ(ai::last_forward_path(), want);
    }
#endif
  };
  if (!backward) return cs;
  OpCase& b = cs.emplace_back("attention_backward", label);
  declare_qkv(b, s, dt, seed);
  b.in("out", {s.B, s.T, s.H, s.hd}, dt).from([s](const Values& in) { return cpu_forward(in, s, 0); });
  b.in("lse", {s.B, s.H, s.T}).from([s](const Values& in) { return cpu_forward(in, s, 1); });
  b.in("dout", {s.B, s.T, s.H, s.hd}, dt).uniform(-1.0f, 1.0f, seed + 3);
  TensorSpec& dq = b.out("dq", {s.B, s.T, s.H, s.hd}, dt);
  TensorSpec& dk = b.out("dk", {s.B, s.S, s.KV, s.hd}, dt);
  b.out("dv", {s.B, s.S, s.KV, s.hd}, dt);
  if (s.T == 1) {
    // One key: p = 1, so dS = p (dout.v - dout.out) = 0 and dq, dk vanish (the reference holds
    // only rounding noise, so a relative error means nothing).
    const Compare vanishes = [](const std::vector<float>& got, const std::vector<float>&, const Values&) {
      double m = 0;
      for (float x : got) m = std::isnan(x) ? INFINITY : std::max(m, (double)std::fabs(x));
      if (m < 1e-5) return ::testing::AssertionSuccess();
      return ::testing::AssertionFailure() << "max |got| " << m << " (expected to vanish)";
    };
    dq.compare(vanishes);
    dk.compare(vanishes);
  }
  b.run = [mode, want](OpArgs& a) {
    ScopedEnv env("LINGUA_ATTENTION", mode);
    attention_backward(a["q"], a["k"], a["v"], a["out"], a["lse"], a["dout"], a["dq"], a["dk"], a["dv"]);
#ifdef LINGUA_CUDA
    if (a.device == Device::cuda && want != ai::Path::none) {
      EXPECT_EQ(ai::last_backward_path(), want);
    }
#endif
  };
  return cs;
}

void append(std::vector<OpCase>& to, std::vector<OpCase> more) {
  for (OpCase& c : more) to.push_back(std::move(c));
}

// B = 2, H = 6, KV in {6, 2, 1}, odd T, with the head_dims given.
std::vector<Shape> odd_shapes(std::initializer_list<int64_t> hds) {
  std::vector<Shape> v;
  for (int64_t hd : hds)
    for (int64_t T : {1, 31, 33, 257})
      for (int64_t KV : {6, 2, 1}) v.push_back({2, T, T, 6, KV, hd});
  return v;
}

std::vector<OpCase> fallback_f32_cases() {
  std::vector<OpCase> cs;
  for (Shape s : {Shape{2, 1, 1, 6, 2, 64}, Shape{2, 31, 31, 6, 6, 32}, Shape{2, 33, 33, 6, 1, 128},
                  Shape{1, 257, 257, 6, 2, 64}, Shape{2, 17, 17, 4, 2, 6}, Shape{1, 9, 9, 2, 1, 256},
                  Shape{2, 40, 40, 3, 3, 10}})
    append(cs, attention_cases(s, DType::f32, "fallback", ai::Path::fallback, true));
  // KV cache: the last T of S positions (forward only).
  for (Shape s : {Shape{2, 5, 13, 6, 2, 64}, Shape{1, 1, 31, 6, 1, 10}, Shape{2, 33, 100, 6, 2, 128}})
    append(cs, attention_cases(s, DType::f32, "fallback", ai::Path::fallback, false));
  return cs;
}

std::vector<OpCase> fallback_bf16_cases() {
  std::vector<OpCase> cs;
  for (Shape s : odd_shapes({64, 128}))
    append(cs, attention_cases(s, DType::bf16, "fallback", ai::Path::fallback, true));
  for (Shape s : {Shape{2, 33, 33, 6, 2, 32}, Shape{2, 31, 31, 6, 3, 6}, Shape{1, 65, 65, 4, 1, 256},
                  Shape{2, 20, 20, 2, 2, 10}})
    append(cs, attention_cases(s, DType::bf16, "fallback", ai::Path::fallback, true));
  for (Shape s : {Shape{2, 5, 13, 6, 2, 64}, Shape{1, 1, 31, 6, 1, 128}, Shape{2, 33, 100, 6, 2, 128},
                  Shape{2, 7, 300, 6, 6, 32}})
    append(cs, attention_cases(s, DType::bf16, "fallback", ai::Path::fallback, false));
  return cs;
}

// Decoding several sequences over a KV cache of len rows each, of which the first S are keys
// (attention_forward_cached): B 1 (contiguous keys, either path), S == len, and the strided case.
std::vector<OpCase> cached_cases() {
  std::vector<OpCase> cs;
  struct C {
    int64_t B, T, S, len, H, KV, hd;
  };
  for (C c : {C{3, 1, 7, 11, 6, 2, 64}, C{3, 4, 9, 9, 4, 4, 32}, C{1, 3, 13, 20, 6, 3, 64}, C{5, 1, 33, 40, 8, 2, 128},
              C{2, 5, 5, 17, 2, 1, 10}})
    for (DType dt : {DType::f32, DType::bf16}) {
      OpCase& k = cs.emplace_back("attention_forward_cached", "B" + std::to_string(c.B) + " S" + std::to_string(c.S) +
                                                                  " len" + std::to_string(c.len));
      k.in("q", {c.B, c.T, c.H, c.hd}, dt).uniform(-2.0f, 2.0f, 51);
      k.in("k", {c.B, c.len, c.KV, c.hd}, dt).uniform(-2.0f, 2.0f, 52);
      k.in("v", {c.B, c.len, c.KV, c.hd}, dt).uniform(-1.0f, 1.0f, 53);
      k.out("out", {c.B, c.T, c.H, c.hd}, dt);
      k.run = [S = c.S](OpArgs& t) { attention_forward_cached(t["q"], t["k"], t["v"], S, t["out"]); };
    }
  return cs;
}

LINGUA_OP_TEST(Attention, CachedMatchesCpu, cached_cases())
LINGUA_OP_TEST(Attention, FallbackF32MatchesCpu, fallback_f32_cases())
LINGUA_OP_TEST(Attention, FallbackBf16MatchesCpu, fallback_bf16_cases())

#ifdef LINGUA_CUDA
std::ostream& operator<<(std::ostream& os, Shape s) {
  return os << "B" << s.B << " T" << s.T << " S" << s.S << " H" << s.H << " KV" << s.KV << " hd" << s.hd;
}

TEST(AttentionCuda, CudnnMatchesCpu) {
  LINGUA_REQUIRE_GPU();
  if (ai::cudnn_version() == 0) GTEST_SKIP() << "no cuDNN: " << ai::cudnn_plans_report();
  std::vector<Shape> shapes = odd_shapes({64, 128});
  for (Shape s : {Shape{2, 128, 128, 6, 2, 64}, Shape{2, 256, 256, 6, 6, 128}, Shape{1, 384, 384, 6, 1, 64},
                  Shape{1, 512, 512, 8, 2, 128}})
    shapes.push_back(s);
  int forward_runs = 0, backward_runs = 0;
  std::vector<OpCase> cases;
  for (Shape s : shapes) {
    std::string why;
    if (!ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, false, &why)) {
      std::printf("[cudnn] forward %s: not run (%s)\n", ::testing::PrintToString(s).c_str(), why.c_str());
      continue;
    }
    const bool bwd = ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, true, &why);
    if (!bwd) std::printf("[cudnn] backward %s: not run (%s)\n", ::testing::PrintToString(s).c_str(), why.c_str());
    append(cases, attention_cases(s, DType::bf16, "cudnn", ai::Path::cudnn, bwd));
    ++forward_runs;
    backward_runs += bwd;
  }
  check_cases(Device::cuda, cases);
  std::printf("[cudnn] %d forward and %d backward shapes ran on cuDNN\n%s", forward_runs, backward_runs,
              ai::cudnn_plans_report().c_str());
  EXPECT_GT(backward_runs, 0);
}

TEST(AttentionCuda, CudnnTakesTrainingShapes) {
  LINGUA_REQUIRE_GPU();
  if (ai::cudnn_version() == 0) GTEST_SKIP() << "no cuDNN: " << ai::cudnn_plans_report();
  for (int64_t hd : {64, 128})
    for (int64_t KV : {8, 2})
      for (bool backward : {false, true}) {
        std::string why;
        EXPECT_TRUE(ai::cudnn_supported(2, 1024, 1024, 8, KV, hd, backward, &why))
            << "hd " << hd << " KV " << KV << (backward ? " backward: " : " forward: ") << why;
      }
}

// Auto mode: cuDNN where it applies, the fallback elsewhere; either way the results are right.
TEST(AttentionCuda, AutoSelection) {
  LINGUA_REQUIRE_GPU();
  const ai::Path best = ai::cudnn_version() != 0 ? ai::Path::cudnn : ai::Path::fallback;
  std::vector<OpCase> cases = attention_cases({2, 256, 256, 6, 2, 64}, DType::bf16, "auto", best, true);
  append(cases, attention_cases({2, 33, 33, 6, 2, 32}, DType::bf16, "auto", ai::Path::fallback, true));  // hd 32
  append(cases, attention_cases({2, 5, 13, 6, 2, 64}, DType::bf16, "auto", ai::Path::fallback, false));  // KV cache
  append(cases, attention_cases({2, 31, 31, 6, 2, 64}, DType::f32, "auto", ai::Path::fallback, true));   // f32
  check_cases(Device::cuda, cases);
}

// q, k, v and dout as attention_cases makes them, on the host.
struct Inputs {
  std::vector<float> q, k, v, dout;
};
Inputs make_inputs(Shape s, uint32_t seed, DType dt) {
  return {as_dtype(random_vector(s.q_size(), seed, -2.0f, 2.0f), dt),
          as_dtype(random_vector(s.kv_size(), seed + 1, -2.0f, 2.0f), dt),
          as_dtype(random_vector(s.kv_size(), seed + 2), dt), as_dtype(random_vector(s.q_size(), seed + 3), dt)};
}

// The inputs on the GPU and the (poisoned) outputs.
struct GpuCase {
  Shape s;
  DeviceTensor q, k, v, out, lse, dout, dq, dk, dv;
  GpuCase(Shape s_, DType dt, const Inputs& in)
      : s(s_), q({s.B, s.T, s.H, s.hd}, dt), k({s.B, s.S, s.KV, s.hd}, dt), v({s.B, s.S, s.KV, s.hd}, dt),
        out({s.B, s.T, s.H, s.hd}, dt), lse({s.B, s.H, s.T}, DType::f32), dout({s.B, s.T, s.H, s.hd}, dt),
        dq({s.B, s.T, s.H, s.hd}, dt), dk({s.B, s.S, s.KV, s.hd}, dt), dv({s.B, s.S, s.KV, s.hd}, dt) {
    q.upload(in.q);
    k.upload(in.k);
    v.upload(in.v);
    dout.upload(in.dout);
  }
  void forward(bool with_lse = true) {
    out.poison();
    lse.poison();
    attention_forward(q.t, k.t, v.t, out.t, with_lse ? lse.t : Tensor());
    cuda_synchronize();
  }
  void backward() {
    dq.poison();
    dk.poison();
    dv.poison();
    attention_backward(q.t, k.t, v.t, out.t, lse.t, dout.t, dq.t, dk.t, dv.t);
    cuda_synchronize();
  }
};

// cuDNN forward with fallback backward and the reverse: the lse conventions agree.
TEST(AttentionCuda, PathsShareTheLseConvention) {
  LINGUA_REQUIRE_GPU();
  const Shape s{2, 256, 256, 6, 2, 128};
  std::string why;
  if (!ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, true, &why)) GTEST_SKIP() << why;
  Inputs in = make_inputs(s, 21, DType::bf16);
  GpuCase c(s, DType::bf16, in), f(s, DType::bf16, in);
  {
    ScopedEnv env("LINGUA_ATTENTION", "cudnn");
    c.forward();
  }
  {
    ScopedEnv env("LINGUA_ATTENTION", "fallback");
    f.forward();
  }
  const auto lse_c = c.lse.download(), lse_f = f.lse.download();
  EXPECT_LT(rel_l2(lse_c, lse_f), 1e-5);
  EXPECT_LT(rel_l2(c.out.download(), f.out.download()), 1e-2);
  // Both backwards from cuDNN's forward.
  f.out.upload(c.out.download());
  f.lse.upload(lse_c);
  {
    ScopedEnv env("LINGUA_ATTENTION", "cudnn");
    c.backward();
  }
  {
    ScopedEnv env("LINGUA_ATTENTION", "fallback");
    f.backward();
  }
  EXPECT_LT(rel_l2(c.dq.download(), f.dq.download()), 1e-2);
  EXPECT_LT(rel_l2(c.dk.download(), f.dk.download()), 1e-2);
  EXPECT_LT(rel_l2(c.dv.download(), f.dv.download()), 1e-2);
}

TEST(AttentionCuda, ForwardWithoutLse) {
  LINGUA_REQUIRE_GPU();
  for (const char* path : {"fallback", "cudnn"}) {
    const Shape s{2, 128, 128, 6, 2, 64};
    if (!std::strcmp(path, "cudnn") && !ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, false, nullptr)) continue;
    ScopedEnv env("LINGUA_ATTENTION", path);
    GpuCase g(s, DType::bf16, make_inputs(s, 5, DType::bf16));
    g.forward(true);
    const auto with = g.out.bytes();
    g.forward(false);
    EXPECT_EQ(g.out.bytes(), with) << path;
  }
}

// Two runs give the same bits (the fallback always; cuDNN in its default deterministic mode).
void check_deterministic(Shape s, const char* path, bool expect) {
  ScopedEnv env("LINGUA_ATTENTION", path);
  GpuCase g(s, DType::bf16, make_inputs(s, 7, DType::bf16));
  g.forward();
  const auto out1 = g.out.bytes(), lse1 = g.lse.bytes();
  g.backward();
  const auto dq1 = g.dq.bytes(), dk1 = g.dk.bytes(), dv1 = g.dv.bytes();
  bool same = true;
  for (int rep = 0; rep < 4; ++rep) {
    g.forward();
    same &= g.out.bytes() == out1 && g.lse.bytes() == lse1;
    g.backward();
    const bool dq_same = g.dq.bytes() == dq1, dkv_same = g.dk.bytes() == dk1 && g.dv.bytes() == dv1;
    if (!dq_same || !dkv_same)
      std::printf("[%s] %s run %d differs: dq %s, dk/dv %s\n", path, ::testing::PrintToString(s).c_str(), rep + 2,
                  dq_same ? "same" : "DIFFERS", dkv_same ? "same" : "DIFFER");
    same &= dq_same && dkv_same;
  }
  std::printf("[%s%s] %s: five runs %s\n", path,
              std::getenv("LINGUA_ATTENTION_DETERMINISTIC") ? " LINGUA_ATTENTION_DETERMINISTIC=0" : "",
              ::testing::PrintToString(s).c_str(), same ? "bitwise identical" : "NOT bitwise identical");
  if (expect) {
    EXPECT_TRUE(same) << path << " " << s;
  }
}

TEST(AttentionCuda, Deterministic) {
  LINGUA_REQUIRE_GPU();
  check_deterministic({2, 257, 257, 6, 2, 64}, "fallback", true);
  check_deterministic({2, 1024, 1024, 8, 2, 128}, "fallback", true);
  const Shape s{2, 1024, 1024, 8, 2, 128};
  if (!ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, true, nullptr)) GTEST_SKIP() << "cuDNN not available";
  check_deterministic(s, "cudnn", true);
  check_deterministic({2, 1024, 1024, 8, 8, 64}, "cudnn", true);
}

// The atomic-dQ cuDNN backward (LINGUA_ATTENTION_DETERMINISTIC=0): right, and is it deterministic?
TEST(AttentionCuda, CudnnAtomicBackward) {
  LINGUA_REQUIRE_GPU();
  ScopedEnv det("LINGUA_ATTENTION_DETERMINISTIC", "0");
  const Shape s{2, 256, 256, 6, 2, 128};
  std::string why;
  if (!ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, true, &why)) GTEST_SKIP() << why;
  check_cases(Device::cuda, attention_cases(s, DType::bf16, "cudnn", ai::Path::cudnn, true, 9));
  check_deterministic({2, 1024, 1024, 8, 2, 128}, "cudnn", false);
}

// A batch whose deterministic backward would need more than the budget (256 MiB here) runs as
// calls on slices of the batch (3 slices of one sequence, B H T^2 2 = 3 x 128 MiB): the gradients
// agree with the fallback kernels' on the same forward output.
TEST(AttentionCuda, CudnnBackwardSplitsLargeBatches) {
  LINGUA_REQUIRE_GPU();
  const Shape s{3, 2048, 2048, 16, 4, 64};
  std::string why;
  if (!ai::cudnn_supported(1, s.T, s.S, s.H, s.KV, s.hd, true, &why)) GTEST_SKIP() << why;
  Inputs in = make_inputs(s, 21, DType::bf16);
  GpuCase g(s, DType::bf16, in);
  {
    ScopedEnv env("LINGUA_ATTENTION", "cudnn"), budget("LINGUA_ATTENTION_WORKSPACE_MB", "256");
    g.forward();
    g.backward();
    ASSERT_EQ(ai::last_backward_path(), ai::Path::cudnn);
  }
  const auto dq = g.dq.download(), dk = g.dk.download(), dv = g.dv.download();
  {
    ScopedEnv env("LINGUA_ATTENTION", "fallback");
    g.backward();
    ASSERT_EQ(ai::last_backward_path(), ai::Path::fallback);
  }
  EXPECT_LT(rel_l2(dq, g.dq.download()), 1e-2);
  EXPECT_LT(rel_l2(dk, g.dk.download()), 1e-2);
  EXPECT_LT(rel_l2(dv, g.dv.download()), 1e-2);
  // The last slice is written too (not left poisoned).
  EXPECT_TRUE(std::isfinite(dq.back()) && std::isfinite(dk.back()) && std::isfinite(dv.back()));
}

// Changing keys / values at positions >= s0 leaves the outputs of earlier queries unchanged, and a
// gradient only on rows < s0 gives no gradient to keys / values at positions >= s0.
void check_causal(Shape s, DType dt, const char* path) {
  SCOPED_TRACE(::testing::Message() << s << " " << path);
  ScopedEnv env("LINGUA_ATTENTION", path);
  const int64_t s0 = s.T / 2 + 1;
  Inputs in = make_inputs(s, 11, dt);
  GpuCase g(s, dt, in);
  g.forward();
  const auto before = g.out.download();
  Inputs changed = in;
  const int64_t kv_row = s.KV * s.hd, row = s.H * s.hd;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = s0 * kv_row; i < s.S * kv_row; ++i) {
      changed.k[b * s.S * kv_row + i] = round_to_bf16(changed.k[b * s.S * kv_row + i] + 0.5f);
      changed.v[b * s.S * kv_row + i] = round_to_bf16(changed.v[b * s.S * kv_row + i] - 0.5f);
    }
  GpuCase h(s, dt, changed);
  h.forward();
  const auto after = h.out.download();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t) {
      bool same = true;
      for (int64_t i = 0; i < row; ++i) same &= after[(b * s.T + t) * row + i] == before[(b * s.T + t) * row + i];
      EXPECT_EQ(same, t < s0) << "b " << b << " t " << t;
    }
  std::vector<float> dout(s.q_size(), 0.0f);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s0 * row; ++i) dout[b * s.T * row + i] = in.dout[b * s.T * row + i];
  g.dout.upload(dout);
  g.backward();
  const auto dk = g.dk.download(), dv = g.dv.download();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = s0 * kv_row; i < s.S * kv_row; ++i) {
      ASSERT_EQ(dk[b * s.S * kv_row + i], 0.0f) << i;
      ASSERT_EQ(dv[b * s.S * kv_row + i], 0.0f) << i;
    }
}

TEST(AttentionCuda, Causal) {
  LINGUA_REQUIRE_GPU();
  check_causal({2, 33, 33, 6, 2, 64}, DType::bf16, "fallback");
  check_causal({2, 33, 33, 6, 2, 64}, DType::f32, "fallback");
  const Shape s{2, 256, 256, 6, 2, 64};
  if (!ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, true, nullptr)) GTEST_SKIP() << "cuDNN not available";
  check_causal(s, DType::bf16, "cudnn");
}

TEST(AttentionCuda, Errors) {
  LINGUA_REQUIRE_GPU();
  const Shape s{1, 8, 8, 4, 2, 64};
  GpuCase g(s, DType::bf16, make_inputs(s, 13, DType::bf16));
  DeviceTensor f32_k({1, 8, 2, 64}, DType::f32), lse_bf16({1, 4, 8}, DType::bf16), big({1, 8, 4, 512}, DType::bf16);
  std::vector<float> cpu_k(8 * 2 * 64);
  // a CPU tensor among GPU ones, mixed dtypes, lse not f32, head_dim over 256
  EXPECT_THROW(attention_forward(g.q.t, Tensor(cpu_k.data(), {1, 8, 2, 64}), g.v.t, g.out.t, g.lse.t), Error);
  EXPECT_THROW(attention_forward(g.q.t, f32_k.t, g.v.t, g.out.t, g.lse.t), Error);
  EXPECT_THROW(attention_forward(g.q.t, g.k.t, g.v.t, g.out.t, lse_bf16.t), Error);
  EXPECT_THROW(attention_forward(big.t, big.t, big.t, big.t, Tensor()), Error);
  // backward needs S == T
  DeviceTensor k12({1, 12, 2, 64}, DType::bf16);
  EXPECT_THROW(attention_backward(g.q.t, k12.t, k12.t, g.out.t, g.lse.t, g.dout.t, g.dq.t, k12.t, k12.t), Error);
  {
    ScopedEnv env("LINGUA_ATTENTION", "bogus");
    EXPECT_THROW(attention_forward(g.q.t, g.k.t, g.v.t, g.out.t, g.lse.t), Error);
  }
  {
    // forcing cuDNN where it cannot run is an error, not a silent fallback
    ScopedEnv env("LINGUA_ATTENTION", "cudnn");
    const Shape s32{1, 8, 8, 4, 2, 32};
    GpuCase g32(s32, DType::bf16, make_inputs(s32, 13, DType::bf16));
    EXPECT_THROW(attention_forward(g32.q.t, g32.k.t, g32.v.t, g32.out.t, g32.lse.t), Error);
    GpuCase f(s, DType::f32, make_inputs(s, 13, DType::f32));
    EXPECT_THROW(attention_forward(f.q.t, f.k.t, f.v.t, f.out.t, f.lse.t), Error);
  }
  EXPECT_NO_THROW(attention_forward(g.q.t, g.k.t, g.v.t, g.out.t, g.lse.t));
  cuda_synchronize();
}

// LINGUA_ATTENTION_BENCH=1: times forward and backward of each path on a training shape.
TEST(AttentionCuda, Benchmark) {
  LINGUA_REQUIRE_GPU();
  if (!std::getenv("LINGUA_ATTENTION_BENCH")) GTEST_SKIP() << "set LINGUA_ATTENTION_BENCH=1";
  for (Shape s : {Shape{4, 2048, 2048, 16, 4, 128}, Shape{8, 1024, 1024, 12, 12, 64}}) {
    GpuCase g(s, DType::bf16, make_inputs(s, 17, DType::bf16));
    for (const char* path : {"cudnn", "fallback"}) {
      if (!std::strcmp(path, "cudnn") && !ai::cudnn_supported(s.B, s.T, s.S, s.H, s.KV, s.hd, true, nullptr))
        continue;
      ScopedEnv env("LINGUA_ATTENTION", path);
      auto time = [&](auto fn) {
        fn();
        cuda_synchronize();
        const int n = 5;
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < n; ++i) fn();
        cuda_synchronize();
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / n;
      };
      const double fwd = time([&] { attention_forward(g.q.t, g.k.t, g.v.t, g.out.t, g.lse.t); });
      const double bwd =
          time([&] { attention_backward(g.q.t, g.k.t, g.v.t, g.out.t, g.lse.t, g.dout.t, g.dq.t, g.dk.t, g.dv.t); });
      const double flop = 4.0 * s.B * s.H * s.T * s.T * s.hd / 2;  // causal: half the scores
      std::printf("[bench] %-8s %s: forward %.3f ms (%.0f TFLOP/s), backward %.3f ms (%.0f TFLOP/s)\n", path,
                  ::testing::PrintToString(s).c_str(), fwd, flop / fwd / 1e9, bwd, 2.5 * flop / bwd / 1e9);
    }
  }
}

#endif

}  // namespace
