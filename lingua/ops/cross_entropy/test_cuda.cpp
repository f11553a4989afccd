// GPU fused output projection + cross-entropy against the CPU reference run on the same
// bf16-rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "lingua/core/cuda.h"
#include "lingua/ops/cross_entropy/cross_entropy.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, D, V;
};
std::ostream& operator<<(std::ostream& os, Case c) { return os << "N" << c.N << " D" << c.D << " V" << c.V; }

// Odd sizes, V = 258 (not a multiple of 8: the scalar row path) and V = 32000 (the vector path).
const Case kCases[] = {{1, 31, 258}, {31, 64, 258}, {33, 17, 50}, {257, 33, 258}, {257, 64, 32000}, {31, 129, 32000}};

// x in [-1, 1), w in [-w_scale, w_scale), both bf16-rounded; every 5th row from row 3 ignored
// (-1, or -100 as PyTorch's default ignore_index).
struct Inputs {
  std::vector<float> x, w;
  std::vector<int32_t> targets;
};
Inputs random_inputs(Case c, uint32_t seed, float w_scale = 0.3f) {
  Inputs in{as_dtype(random_vector(c.N * c.D, seed), DType::bf16),
            as_dtype(random_vector(c.V * c.D, seed + 1, -w_scale, w_scale), DType::bf16),
            random_ints(c.N, seed + 2, 0, (int32_t)c.V - 1)};
  for (int64_t n = 3; n < c.N; n += 5) in.targets[n] = n % 2 ? -1 : -100;
  return in;
}

struct Result {
  double total = 0;
  std::vector<float> nll, dx, dw;
};

Result cpu_reference(const Inputs& in, Case c, float grad_scale) {
  Result r{0, std::vector<float>(c.N), std::vector<float>(c.N * c.D), std::vector<float>(c.V * c.D, 0.0f)};
  r.total = output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                                 Tensor(in.targets.data(), {c.N}), Tensor(r.nll.data(), {c.N}), grad_scale,
                                 Tensor(r.dx.data(), {c.N, c.D}), Tensor(r.dw.data(), {c.V, c.D}));
  return r;
}

// The inputs on the GPU.
struct GpuInputs {
  DeviceTensor x, w, targets;
  GpuInputs(const Inputs& in, Case c)
      : x({c.N, c.D}, DType::bf16), w({c.V, c.D}, DType::bf16), targets({c.N}, DType::i32) {
    x.upload(in.x);
    w.upload(in.w);
    targets.upload(in.targets);
  }
  Tensor X() const { return x.t; }
  Tensor W() const { return w.t; }
  Tensor T() const { return targets.t; }
};

// Outputs on the GPU: nll and dx poisoned (written), dw zero (accumulated).
struct Outputs {
  DeviceTensor nll, dx, dw;
  explicit Outputs(Case c) : nll({c.N}, DType::f32), dx({c.N, c.D}, DType::bf16), dw({c.V, c.D}, DType::f32) {
    nll.poison();
    dx.poison();
    dw.zero();
  }
};

struct Call {
  bool want_nll = true, want_dx = true, want_dw = true;
  int64_t chunk = 0;
};

double run(const GpuInputs& d, Outputs& o, float grad_scale, Call call = {}) {
  const Tensor nll = call.want_nll ? o.nll.t : Tensor();
  const Tensor dx = call.want_dx ? o.dx.t : Tensor();
  const Tensor dw = call.want_dw ? o.dw.t : Tensor();
#ifdef LINGUA_CUDA
  if (call.chunk > 0) return output_cross_entropy_cuda(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw, call.chunk);
#endif
  return output_cross_entropy(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw);
}

void expect_matches_cpu(Case c, float grad_scale, int64_t chunk, uint32_t seed) {
  const Inputs in = random_inputs(c, seed);
  const Result ref = cpu_reference(in, c, grad_scale);
  GpuInputs d(in, c);
  Outputs o(c);
  Call call;
  call.chunk = chunk;
  const double total = run(d, o, grad_scale, call);
  const auto nll = o.nll.download(), dx = o.dx.download(), dw = o.dw.download();
  EXPECT_LT(rel_l2(nll, ref.nll), 1e-2) << c << " chunk " << chunk;
  EXPECT_LT(std::fabs(total - ref.total), 1e-2 * std::fabs(ref.total)) << c << " chunk " << chunk;
  EXPECT_LT(rel_l2(dx, ref.dx), 1e-2) << c << " chunk " << chunk;
  EXPECT_LT(rel_l2(dw, ref.dw), 1e-2) << c << " chunk " << chunk;
  // the total is the sum of the per-row nll; ignored rows are exactly 0, with no gradient
  double sum = 0;
  for (int64_t n = 0; n < c.N; ++n) {
    sum += nll[n];
    if (in.targets[n] < 0) {
      EXPECT_EQ(nll[n], 0.0f) << c << " row " << n;
      for (int64_t i = 0; i < c.D; ++i) ASSERT_EQ(dx[n * c.D + i], 0.0f) << c << " row " << n;
    }
  }
  EXPECT_NEAR(total, sum, 1e-9 * std::fabs(sum)) << c;
}

TEST(CrossEntropyCuda, MatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  uint32_t seed = 1;
  for (Case c : kCases) expect_matches_cpu(c, 0.7f, 0, seed += 10);
}

// Several chunks (and x chunks at offsets that are not 16-byte aligned when D is odd).
TEST(CrossEntropyCuda, MultiChunkMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  uint32_t seed = 100;
  for (Case c : kCases)
    for (int64_t chunk : {1, 7, 64})
      if (chunk < c.N) expect_matches_cpu(c, 1.3f, chunk, seed += 10);
}

TEST(CrossEntropyCuda, LargeLogitsStayFinite) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Case c{65, 64, 258};
  const Inputs in = random_inputs(c, 7, 15.0f);  // logits of standard deviation ~40
  const Result ref = cpu_reference(in, c, 1.0f);
  GpuInputs d(in, c);
  Outputs o(c);
  const double total = run(d, o, 1.0f);
  EXPECT_TRUE(std::isfinite(total));
  EXPECT_LT(rel_l2(o.nll.download(), ref.nll), 1e-2);
  for (float v : o.dx.download()) ASSERT_TRUE(std::isfinite(v));
  for (float v : o.dw.download()) ASSERT_TRUE(std::isfinite(v));
}

TEST(CrossEntropyCuda, ForwardOnlyGivesTheSameLoss) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{257, 33, 258}, Case{257, 64, 32000}}) {
    const Inputs in = random_inputs(c, 8);
    GpuInputs d(in, c);
    Outputs with_grads(c), eval(c), no_nll(c);
    const double t1 = run(d, with_grads, 1.0f);
    const double t2 = run(d, eval, 1.0f, Call{true, false, false, 0});
    const double t3 = run(d, no_nll, 1.0f, Call{false, false, false, 0});
    EXPECT_EQ(t1, t2) << c;
    EXPECT_EQ(t1, t3) << c;
    EXPECT_EQ(with_grads.nll.bytes(), eval.nll.bytes()) << c;
    // with dx or dw alone, the other gradient is the same as when both are computed
    Outputs dx_only(c), dw_only(c);
    run(d, dx_only, 1.0f, Call{true, true, false, 0});
    run(d, dw_only, 1.0f, Call{true, false, true, 0});
    EXPECT_EQ(dx_only.dx.bytes(), with_grads.dx.bytes()) << c;
    EXPECT_EQ(dw_only.dw.bytes(), with_grads.dw.bytes()) << c;
  }
}

TEST(CrossEntropyCuda, GradScaleScalesGradients) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Case c{33, 17, 50};
  const Inputs in = random_inputs(c, 9);
  GpuInputs d(in, c);
  Outputs one(c), scaled(c);
  run(d, one, 1.0f);
  run(d, scaled, 0.25f);
  EXPECT_EQ(one.nll.bytes(), scaled.nll.bytes());
  auto dx = one.dx.download(), dw = one.dw.download();
  for (float& v : dx) v *= 0.25f;
  for (float& v : dw) v *= 0.25f;
  EXPECT_TRUE(close(scaled.dx.download(), dx, 1e-6, "dx"));
  EXPECT_TRUE(close(scaled.dw.download(), dw, 1e-6, "dw"));
}

TEST(CrossEntropyCuda, DwAccumulatesDxIsWritten) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{33, 17, 50}, Case{257, 64, 32000}}) {
    const Inputs in = random_inputs(c, 10);
    GpuInputs d(in, c);
    Outputs once(c), twice(c);
    run(d, once, 1.0f);
    run(d, twice, 1.0f);
    run(d, twice, 1.0f);
    auto expected = once.dw.download();
    for (float& v : expected) v *= 2;
    EXPECT_TRUE(close(twice.dw.download(), expected, 1e-6, "dw twice")) << c;
    EXPECT_EQ(twice.dx.bytes(), once.dx.bytes()) << c;
  }
}

TEST(CrossEntropyCuda, Deterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{257, 64, 32000}, Case{1000, 96, 258}})
    for (int64_t chunk : {0, 100}) {
      const Inputs in = random_inputs(c, 11);
      GpuInputs d(in, c);
      Outputs a(c), b(c);
      Call call;
      call.chunk = chunk;
      const double ta = run(d, a, 0.5f, call), tb = run(d, b, 0.5f, call);
      EXPECT_EQ(ta, tb) << c;
      EXPECT_EQ(a.nll.bytes(), b.nll.bytes()) << c;
      EXPECT_EQ(a.dx.bytes(), b.dx.bytes()) << c;
      EXPECT_EQ(a.dw.bytes(), b.dw.bytes()) << c;
    }
}

TEST(CrossEntropyCuda, TargetOutsideVocabularyIsReported) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Case c{4, 3, 5};
  Inputs in = random_inputs(c, 12);
  for (auto [bad, row, value] : {std::tuple{std::vector<int32_t>{0, 4, 1, 5}, "row 3", "target 5"},
                                  std::tuple{std::vector<int32_t>{0, 7, 1, 5}, "row 1", "target 7"}}) {
    in.targets = bad;
    GpuInputs d(in, c);
    Outputs o(c);
    try {
      run(d, o, 1.0f);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(row), std::string::npos) << msg;
      EXPECT_NE(msg.find(value), std::string::npos) << msg;
    }
  }
  // the error does not stick: a valid call afterwards works
  in.targets = {0, 4, 1, -1};
  GpuInputs d(in, c);
  Outputs o(c);
  EXPECT_TRUE(std::isfinite(run(d, o, 1.0f)));
}

// ---- output_cross_entropy_sum: the loss kept on the device ----

// The sum form into *loss (device memory), as run() calls the returning form.
void run_sum(const GpuInputs& d, Outputs& o, float grad_scale, double* loss, bool accumulate, int64_t chunk = 0) {
  const Tensor nll = o.nll.t, dx = o.dx.t, dw = o.dw.t;
#ifdef LINGUA_CUDA
  if (chunk > 0)
    return output_cross_entropy_sum_cuda(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw, loss, accumulate, chunk);
#endif
  output_cross_entropy_sum(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw, loss, accumulate);
}

double read_double(const double* device) {
  double v;
  copy_to_host(&v, device, sizeof v);
  return v;
}

::testing::AssertionResult same_double(double a, double b) {
  if (std::memcmp(&a, &b, sizeof a) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << std::hexfloat << a << " vs " << b;
}

TEST(CrossEntropyCuda, DeviceSumIsTheReturnedLossBitwise) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  DeviceBuffer loss(sizeof(double));
  for (Case c : {Case{33, 17, 50}, Case{257, 64, 32000}})
    for (int64_t chunk : {0, 7}) {
      const Inputs in = random_inputs(c, 20), in2 = random_inputs(c, 21);
      GpuInputs d(in, c), d2(in2, c);
      Outputs ref(c), ref2(c), o(c);
      Call call;
      call.chunk = chunk;
      const double t = run(d, ref, 0.5f, call), t2 = run(d2, ref2, 0.5f, call);
      poison(loss);
      run_sum(d, o, 0.5f, loss.as<double>(), false, chunk);
      EXPECT_TRUE(same_double(read_double(loss.as<double>()), t)) << c << " chunk " << chunk;
      EXPECT_EQ(o.nll.bytes(), ref.nll.bytes()) << c;
      EXPECT_EQ(o.dx.bytes(), ref.dx.bytes()) << c;
      EXPECT_EQ(o.dw.bytes(), ref.dw.bytes()) << c;
      // accumulated over a second call: the host sum of the two returned losses
      run_sum(d2, o, 0.5f, loss.as<double>(), true, chunk);
      EXPECT_TRUE(same_double(read_double(loss.as<double>()), t + t2)) << c << " chunk " << chunk;
      EXPECT_EQ(o.nll.bytes(), ref2.nll.bytes()) << c;
    }
}

TEST(CrossEntropyCuda, DeviceSumEdgeCases) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  DeviceBuffer loss(sizeof(double));
  // No rows: written 0, or left as is when accumulating.
  const Case c0{0, 3, 5};
  const Inputs in0 = random_inputs(Case{1, 3, 5}, 22);
  GpuInputs d0(in0, Case{1, 3, 5});
  const Tensor X0(nullptr, {0, c0.D}, DType::bf16, Device::cuda), T0(nullptr, {0}, DType::i32, Device::cuda);
  const double seven = 7.0;
  copy_to_device(loss.data(), &seven, sizeof seven);
  output_cross_entropy_sum(X0, d0.W(), T0, Tensor(), 1.0f, Tensor(), Tensor(), loss.as<double>(), true);
  EXPECT_EQ(read_double(loss.as<double>()), 7.0);
  output_cross_entropy_sum(X0, d0.W(), T0, Tensor(), 1.0f, Tensor(), Tensor(), loss.as<double>(), false);
  EXPECT_EQ(read_double(loss.as<double>()), 0.0);

  // A target >= V is not reported: the row counts as ignored (the caller validates targets).
  const Case c{9, 3, 5};
  Inputs in = random_inputs(c, 23);
  Inputs ignored = in;
  in.targets[2] = 5;
  in.targets[6] = 1000;
  ignored.targets[2] = ignored.targets[6] = -1;
  GpuInputs bad(in, c), good(ignored, c);
  Outputs ob(c), og(c);
  const double t = run(good, og, 1.0f);
  EXPECT_NO_THROW(run_sum(bad, ob, 1.0f, loss.as<double>(), false));
  EXPECT_TRUE(same_double(read_double(loss.as<double>()), t));
  EXPECT_EQ(ob.nll.bytes(), og.nll.bytes());
  EXPECT_EQ(ob.dx.bytes(), og.dx.bytes());
  EXPECT_EQ(ob.dw.bytes(), og.dw.bytes());
  EXPECT_THROW(run_sum(good, og, 1.0f, nullptr, false), Error);
}

// Captured in a CUDA graph after one eager call (which sizes the op scratch) and replayed: the
// same loss, nll, dx and dw bits as the eager call, also after the inputs change.
TEST(CrossEntropyCuda, CapturedCallReplaysBitwise) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (auto [c, chunk] : {std::pair{Case{257, 64, 32000}, int64_t(0)}, std::pair{Case{100, 33, 258}, int64_t(30)}}) {
    const Inputs in = random_inputs(c, 30), in2 = random_inputs(c, 31);
    GpuInputs d(in, c);
    DeviceBuffer loss(sizeof(double));
    Outputs eager(c), eager2(c), o(c);
    // eager references (on a separate copy of the second input)
    run_sum(d, eager, 0.5f, loss.as<double>(), false, chunk);
    const double t = read_double(loss.as<double>());
    {
      GpuInputs d2(in2, c);
      run_sum(d2, eager2, 0.5f, loss.as<double>(), false, chunk);
    }
    const double t2 = read_double(loss.as<double>());

    CudaGraph g;
    g.begin_capture();
    run_sum(d, o, 0.5f, loss.as<double>(), false, chunk);
    g.end_capture();
    ASSERT_TRUE(g.ready()) << c;

    poison(loss);
    o.nll.poison();
    o.dx.poison();
    o.dw.zero();
    g.launch();
    EXPECT_TRUE(same_double(read_double(loss.as<double>()), t)) << c;
    EXPECT_EQ(o.nll.bytes(), eager.nll.bytes()) << c;
    EXPECT_EQ(o.dx.bytes(), eager.dx.bytes()) << c;
    EXPECT_EQ(o.dw.bytes(), eager.dw.bytes()) << c;

    // new inputs in the same buffers, replayed
    d.x.upload(in2.x);
    d.targets.upload(in2.targets);
    d.w.upload(in2.w);
    poison(loss);
    o.nll.poison();
    o.dx.poison();
    o.dw.zero();
    g.launch();
    EXPECT_TRUE(same_double(read_double(loss.as<double>()), t2)) << c;
    EXPECT_EQ(o.nll.bytes(), eager2.nll.bytes()) << c;
    EXPECT_EQ(o.dx.bytes(), eager2.dx.bytes()) << c;
    EXPECT_EQ(o.dw.bytes(), eager2.dw.bytes()) << c;
  }
}

TEST(CrossEntropyCuda, ArgumentErrors) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Case c{4, 3, 5};
  const Inputs in = random_inputs(c, 13);
  GpuInputs d(in, c);
  DeviceTensor f32_buf({c.V, c.D}, DType::f32), i32_buf({c.N}, DType::i32);
  std::vector<int32_t> host_targets = in.targets;
  const auto cuda = Device::cuda;
  const Tensor X = d.X(), W = d.W(), T = d.T();
  // dtypes
  EXPECT_THROW(output_cross_entropy(f32_buf.view({c.N, c.D}, DType::f32), W, T, Tensor(), 1.0f, Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, f32_buf.view({c.V, c.D}, DType::f32), T, Tensor(), 1.0f, Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, f32_buf.view({c.N}, DType::f32), Tensor(), 1.0f, Tensor(), Tensor()), Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, f32_buf.view({c.N, c.D}, DType::f32), Tensor()), Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, Tensor(), f32_buf.view({c.V, c.D}, DType::bf16)), Error);
  // devices
  EXPECT_THROW(output_cross_entropy(X, W, Tensor(host_targets.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor()),
               Error);
  // shapes
  EXPECT_THROW(output_cross_entropy(X, d.w.view({c.D, c.V}, DType::bf16), T, Tensor(), 1.0f, Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, i32_buf.view({c.N - 1}, DType::i32), Tensor(), 1.0f, Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, f32_buf.view({c.N + 1}, DType::f32), 1.0f, Tensor(), Tensor()), Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, Tensor(), f32_buf.view({c.V, c.D + 1}, DType::f32)),
               Error);
  // no rows: nothing to do
  EXPECT_EQ(output_cross_entropy(Tensor(nullptr, {0, c.D}, DType::bf16, cuda), W,
                                 Tensor(nullptr, {0}, DType::i32, cuda), Tensor(), 1.0f, Tensor(), Tensor()),
            0.0);
}

}  // namespace
