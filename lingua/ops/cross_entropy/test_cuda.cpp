// GPU fused output projection + cross-entropy against the CPU reference (the op-test harness), and
// the GPU's own guarantees: optional outputs, determinism, the loss kept on the device, capture.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/cross_entropy/cross_entropy.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, D, V;
};
std::ostream& operator<<(std::ostream& os, Case c) { return os << "N" << c.N << " D" << c.D << " V" << c.V; }

// Odd sizes, V = 258 (not a multiple of 8: the scalar row path) and V = 32000 (the vector path).
const Case kCases[] = {{1, 31, 258}, {31, 64, 258}, {33, 17, 50}, {257, 33, 258}, {257, 64, 32000}, {31, 129, 32000}};

// Every 5th row from row 3 ignored (-1, or -100 as PyTorch's default ignore_index).
std::vector<int32_t> random_targets(Case c, uint32_t seed) {
  auto t = random_ints(c.N, seed, 0, (int32_t)c.V - 1);
  for (int64_t n = 3; n < c.N; n += 5) t[n] = n % 2 ? -1 : -100;
  return t;
}

// nll, dx and dw (from zero) against the CPU within 1e-2, and the returned total; x in [-1, 1)
// (seed), w in [-w_scale, w_scale) (seed + 1), both bf16. chunk > 0: at most that many rows per
// chunk on the GPU.
OpCase ce_case(Case c, uint32_t seed, float grad_scale, int64_t chunk, float w_scale = 0.3f) {
  OpCase k("output_cross_entropy", "grad_scale " + std::to_string(grad_scale) + " chunk " + std::to_string(chunk));
  k.in("x", {c.N, c.D}, DType::bf16).uniform(-1.0f, 1.0f, seed);
  k.in("w", {c.V, c.D}, DType::bf16).uniform(-w_scale, w_scale, seed + 1);
  k.in("targets", {c.N}, DType::i32).values(random_targets(c, seed + 2));
  k.out("nll", {c.N}).tol(1e-2);
  k.out("dx", {c.N, c.D}, DType::bf16);
  k.out("dw", {c.V, c.D}).accumulated().fill(0.0f).tol(1e-2);
  k.scalar("total", 1e-2);
  k.run = [grad_scale, chunk](OpArgs& a) {
#ifdef LINGUA_CUDA
    if (a.device == Device::cuda && chunk > 0)
      return a.set("total", output_cross_entropy_cuda(a["x"], a["w"], a["targets"], a["nll"], grad_scale, a["dx"],
                                                      a["dw"], chunk));
#endif
    a.set("total", output_cross_entropy(a["x"], a["w"], a["targets"], a["nll"], grad_scale, a["dx"], a["dw"]));
  };
  // The total is the sum of the per-row nll; ignored rows are exactly 0, with no gradient.
  k.check = [c](const Values& in, const Values& got, const Values&) {
    double sum = 0;
    for (int64_t n = 0; n < c.N; ++n) {
      sum += got["nll"][n];
      if (in.ints("targets")[n] >= 0) continue;
      EXPECT_EQ(got["nll"][n], 0.0f) << "row " << n;
      for (int64_t i = 0; i < c.D; ++i)
        if (got["dx"][n * c.D + i] != 0.0f) {
          ADD_FAILURE() << "dx of ignored row " << n << " is not 0";
          break;
        }
    }
    EXPECT_NEAR(got.scalar("total"), sum, 1e-9 * std::fabs(sum));
  };
  return k;
}

std::vector<OpCase> single_chunk_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 1;
  for (Case c : kCases) cs.push_back(ce_case(c, seed += 10, 0.7f, 0));
  return cs;
}

// Several chunks (and x chunks at offsets that are not 16-byte aligned when D is odd).
std::vector<OpCase> multi_chunk_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 100;
  for (Case c : kCases)
    for (int64_t chunk : {1, 7, 64})
      if (chunk < c.N) cs.push_back(ce_case(c, seed += 10, 1.3f, chunk));
  return cs;
}

// Logits of standard deviation ~40: nll against the CPU, everything finite.
std::vector<OpCase> large_logit_cases() {
  OpCase k = ce_case({65, 64, 258}, 7, 1.0f, 0, 15.0f);
  k.scalars.clear();
  const Compare finite = [](const std::vector<float>& got, const std::vector<float>&, const Values&) {
    for (size_t i = 0; i < got.size(); ++i)
      if (!std::isfinite(got[i])) return ::testing::AssertionFailure() << "not finite at " << i << ": " << got[i];
    return ::testing::AssertionSuccess();
  };
  k.tensor("dx").compare(finite);
  k.tensor("dw").compare(finite);
  const auto check = k.check;
  k.check = [check](const Values& in, const Values& got, const Values& ref) {
    EXPECT_TRUE(std::isfinite(got.scalar("total")));
    check(in, got, ref);
  };
  return {k};
}

LINGUA_OP_TEST(CrossEntropy, MatchesCpu, single_chunk_cases())
LINGUA_OP_TEST(CrossEntropy, MultiChunkMatchesCpu, multi_chunk_cases())
LINGUA_OP_TEST(CrossEntropy, LargeLogitsStayFinite, large_logit_cases())

// x, w (seeds seed, seed + 1) and targets (seed + 2) as ce_case makes them, on the host.
struct Inputs {
  std::vector<float> x, w;
  std::vector<int32_t> targets;
};
Inputs random_inputs(Case c, uint32_t seed) {
  return {as_dtype(random_vector(c.N * c.D, seed), DType::bf16),
          as_dtype(random_vector(c.V * c.D, seed + 1, -0.3f, 0.3f), DType::bf16), random_targets(c, seed + 2)};
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

TEST(CrossEntropyCuda, ForwardOnlyGivesTheSameLoss) {
  LINGUA_REQUIRE_GPU();
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
  LINGUA_REQUIRE_GPU();
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
  LINGUA_REQUIRE_GPU();
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
  LINGUA_REQUIRE_GPU();
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
  LINGUA_REQUIRE_GPU();
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

TEST(CrossEntropyCuda, DeviceSumIsTheReturnedLossBitwise) {
  LINGUA_REQUIRE_GPU();
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
      EXPECT_TRUE(same_bits(read_device_double(loss.as<double>()), t)) << c << " chunk " << chunk;
      EXPECT_EQ(o.nll.bytes(), ref.nll.bytes()) << c;
      EXPECT_EQ(o.dx.bytes(), ref.dx.bytes()) << c;
      EXPECT_EQ(o.dw.bytes(), ref.dw.bytes()) << c;
      // accumulated over a second call: the host sum of the two returned losses
      run_sum(d2, o, 0.5f, loss.as<double>(), true, chunk);
      EXPECT_TRUE(same_bits(read_device_double(loss.as<double>()), t + t2)) << c << " chunk " << chunk;
      EXPECT_EQ(o.nll.bytes(), ref2.nll.bytes()) << c;
    }
}

TEST(CrossEntropyCuda, DeviceSumEdgeCases) {
  LINGUA_REQUIRE_GPU();
  DeviceBuffer loss(sizeof(double));
  // No rows: written 0, or left as is when accumulating.
  const Case c0{0, 3, 5};
  const Inputs in0 = random_inputs(Case{1, 3, 5}, 22);
  GpuInputs d0(in0, Case{1, 3, 5});
  const Tensor X0(nullptr, {0, c0.D}, DType::bf16, Device::cuda), T0(nullptr, {0}, DType::i32, Device::cuda);
  const double seven = 7.0;
  copy_to_device(loss.data(), &seven, sizeof seven);
  output_cross_entropy_sum(X0, d0.W(), T0, Tensor(), 1.0f, Tensor(), Tensor(), loss.as<double>(), true);
  EXPECT_EQ(read_device_double(loss.as<double>()), 7.0);
  output_cross_entropy_sum(X0, d0.W(), T0, Tensor(), 1.0f, Tensor(), Tensor(), loss.as<double>(), false);
  EXPECT_EQ(read_device_double(loss.as<double>()), 0.0);

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
  EXPECT_TRUE(same_bits(read_device_double(loss.as<double>()), t));
  EXPECT_EQ(ob.nll.bytes(), og.nll.bytes());
  EXPECT_EQ(ob.dx.bytes(), og.dx.bytes());
  EXPECT_EQ(ob.dw.bytes(), og.dw.bytes());
  EXPECT_THROW(run_sum(good, og, 1.0f, nullptr, false), Error);
}

// Captured in a CUDA graph after one eager call (which sizes the op scratch) and replayed: the
// same loss, nll, dx and dw bits as the eager call, also after the inputs change.
TEST(CrossEntropyCuda, CapturedCallReplaysBitwise) {
  LINGUA_REQUIRE_GPU();
  for (auto [c, chunk] : {std::pair{Case{257, 64, 32000}, int64_t(0)}, std::pair{Case{100, 33, 258}, int64_t(30)}}) {
    const Inputs in = random_inputs(c, 30), in2 = random_inputs(c, 31);
    GpuInputs d(in, c);
    DeviceBuffer loss(sizeof(double));
    Outputs eager(c), eager2(c), o(c);
    // eager references (on a separate copy of the second input)
    run_sum(d, eager, 0.5f, loss.as<double>(), false, chunk);
    const double t = read_device_double(loss.as<double>());
    {
      GpuInputs d2(in2, c);
      run_sum(d2, eager2, 0.5f, loss.as<double>(), false, chunk);
    }
    const double t2 = read_device_double(loss.as<double>());

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
    EXPECT_TRUE(same_bits(read_device_double(loss.as<double>()), t)) << c;
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
    EXPECT_TRUE(same_bits(read_device_double(loss.as<double>()), t2)) << c;
    EXPECT_EQ(o.nll.bytes(), eager2.nll.bytes()) << c;
    EXPECT_EQ(o.dx.bytes(), eager2.dx.bytes()) << c;
    EXPECT_EQ(o.dw.bytes(), eager2.dw.bytes()) << c;
  }
}

TEST(CrossEntropyCuda, ArgumentErrors) {
  LINGUA_REQUIRE_GPU();
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
