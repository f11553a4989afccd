// GPU linear layer against the CPU reference (the op-test harness): cuBLASLt and the fallback
// kernel, with and without a fused residual; determinism, optional gradients and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <utility>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/linear/linear.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, in, out;
};
std::ostream& operator<<(std::ostream& os, Case c) { return os << "N" << c.N << " in" << c.in << " out" << c.out; }

// Odd sizes, a single row, and one larger aligned problem that takes the tensor-core kernels.
const Case kCases[] = {{1, 1, 1}, {1, 31, 17}, {31, 33, 65}, {33, 257, 31}, {257, 64, 128}, {257, 129, 33},
                       {128, 1024, 512}};

struct Dtypes {
  DType in, out;  // x / w / dy, and y / dx
};
const Dtypes kDtypes[] = {{DType::bf16, DType::bf16}, {DType::bf16, DType::f32}, {DType::f32, DType::f32}};
std::ostream& operator<<(std::ostream& os, Dtypes d) { return os << dtype_name(d.in) << "->" << dtype_name(d.out); }

// bf16 outputs: rounding of the result. f32 outputs from bf16 inputs: products are exact, sums in
// fp32 (tensor cores may round the running sum differently from RNE). The f32 path: fp32 FMA.
double tolerance(Dtypes d) { return d.out == DType::bf16 ? 1e-2 : d.in == DType::bf16 ? 1e-4 : 1e-5; }

// x (seed), w (seed + 1) and, for the backward, dy (seed + 2), in d.in.
OpCase inputs(const char* op, const char* label, Case c, Dtypes d, uint32_t seed, bool with_dy) {
  OpCase k(op, label);
  k.in("x", {c.N, c.in}, d.in).uniform(-1.0f, 1.0f, seed);
  k.in("w", {c.out, c.in}, d.in).uniform(-1.0f, 1.0f, seed + 1);
  if (with_dy) k.in("dy", {c.N, c.out}, d.in).uniform(-1.0f, 1.0f, seed + 2);
  return k;
}

OpCase forward_case(Case c, Dtypes d, uint32_t seed) {
  OpCase k = inputs("linear_forward", "", c, d, seed, false);
  k.out("y", {c.N, c.out}, d.out).tol(tolerance(d));
  k.run = [](OpArgs& a) { linear_forward(a["x"], a["w"], a["y"]); };
  return k;
}

// dx written, dw accumulated onto random values (seed + 3).
OpCase backward_case(Case c, Dtypes d, uint32_t seed) {
  OpCase k = inputs("linear_backward", "", c, d, seed, true);
  k.out("dx", {c.N, c.in}, d.out).tol(tolerance(d));
  k.out("dw", {c.out, c.in}).accumulated().uniform(-1.0f, 1.0f, seed + 3).tol(tolerance({d.in, DType::f32}));
  k.run = [](OpArgs& a) { linear_backward(a["x"], a["w"], a["dy"], a["dx"], a["dw"]); };
  return k;
}

// accumulate_dx adds to what is there (seed + 4); no dw.
OpCase backward_accumulate_case(Case c, Dtypes d, uint32_t seed) {
  OpCase k = inputs("linear_backward", "accumulate_dx", c, d, seed, true);
  k.out("dx", {c.N, c.in}, d.out).accumulated().uniform(-1.0f, 1.0f, seed + 4).tol(tolerance(d));
  k.run = [](OpArgs& a) { linear_backward(a["x"], a["w"], a["dy"], a["dx"], Tensor(), true); };
  return k;
}

std::vector<OpCase> forward_cases(const std::vector<Case>& shapes, uint32_t seed, bool with_backward) {
  std::vector<OpCase> cs;
  for (Case c : shapes)
    for (Dtypes d : kDtypes) {
      cs.push_back(forward_case(c, d, seed += 10));
      if (!with_backward) continue;
      cs.push_back(backward_case(c, d, seed += 10));
      cs.push_back(backward_accumulate_case(c, d, seed));
    }
  return cs;
}

std::vector<OpCase> backward_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 1000;
  for (Case c : kCases)
    for (Dtypes d : kDtypes) {
      cs.push_back(backward_case(c, d, seed += 10));
      cs.push_back(backward_accumulate_case(c, d, seed));
    }
  return cs;
}

// y = x W^T + residual (seed + 5, in [-4, 4)), the residual a separate input or y itself. The
// error is relative to the size of the two terms, not of their sum: residual + product may cancel
// (a single output element of 1e-5 relative error was seen at N 1, out 1).
OpCase residual_case(Case c, Dtypes d, uint32_t seed, bool aliased) {
  OpCase k = inputs("linear_forward", aliased ? "residual in place" : "residual", c, d, seed, false);
  const std::string r = aliased ? "y" : "residual";
  if (!aliased) k.in("residual", {c.N, c.out}, d.out).uniform(-4.0f, 4.0f, seed + 5);
  TensorSpec& y = k.out("y", {c.N, c.out}, d.out);
  if (aliased) y.accumulated().uniform(-4.0f, 4.0f, seed + 5);
  y.compare([r, tol = tolerance(d)](const std::vector<float>& got, const std::vector<float>& ref, const Values& in) {
    const std::vector<float>& res = in[r];
    double diff = 0, scale_r = 0, scale_p = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      diff += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
      scale_r += (double)res[i] * res[i];
      scale_p += ((double)ref[i] - res[i]) * ((double)ref[i] - res[i]);
    }
    const double err = std::sqrt(diff) / std::max(std::sqrt(scale_r) + std::sqrt(scale_p), 1e-30);
    if (err < tol) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "error " << err << " relative to the terms, tolerance " << tol;
  });
  k.run = [aliased](OpArgs& a) { linear_forward(a["x"], a["w"], a["y"], aliased ? a["y"] : a["residual"]); };
  return k;
}

std::vector<OpCase> residual_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 3000;
  for (int64_t N : {1, 31, 33, 257})
    for (int64_t in : {1, 7, 64, 130, 1024})
      for (int64_t out : {1, 7, 64, 130, 1024})
        for (Dtypes d : kDtypes)
          for (bool aliased : {false, true}) cs.push_back(residual_case({N, in, out}, d, seed += 10, aliased));
  return cs;
}

const std::vector<Case> all_cases(std::begin(kCases), std::end(kCases));
LINGUA_OP_TEST(Linear, ForwardMatchesCpu, forward_cases(all_cases, 1, false))
LINGUA_OP_TEST(Linear, BackwardMatchesCpu, backward_cases())

TEST(LinearCpuBackend, ResidualMatchesCpu) { check_cases(Device::cpu, residual_cases()); }

#ifdef LINGUA_CUDA
TEST(LinearCuda, ResidualMatchesCpu) {
  LINGUA_REQUIRE_GPU();
  const uint64_t fallbacks = linear_cuda_fallback_count();
  const auto cases = residual_cases();
  check_cases(Device::cuda, cases);
  // Informational: sizes cuBLASLt had no (out-of-place capable) algorithm for.
  std::cout << "[   INFO   ] fallback kernel runs in this sweep: " << linear_cuda_fallback_count() - fallbacks
            << " of " << cases.size() << "\n";
}

// The transformer's case (bf16 x / w, f32 residual stream) at an aligned size must run on
// cuBLASLt both in place and out of place, not on the fallback kernel.
TEST(LinearCuda, ResidualUsesCublasLt) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{128, 1024, 512}, Case{256, 512, 1024}})
    for (bool aliased : {false, true}) {
      const uint64_t before = linear_cuda_fallback_count();
      check_case(Device::cuda, residual_case(c, {DType::bf16, DType::f32}, 41, aliased));
      EXPECT_EQ(linear_cuda_fallback_count(), before) << c << (aliased ? " in place" : " separate");
    }
}

// The simple kernel used when cuBLASLt has no algorithm for a problem.
struct ForceFallback {
  ForceFallback() { linear_cuda_force_fallback(true); }
  ~ForceFallback() { linear_cuda_force_fallback(false); }
};

TEST(LinearCuda, FallbackKernelMatchesCpu) {
  LINGUA_REQUIRE_GPU();
  ForceFallback force;
  check_cases(Device::cuda,
              forward_cases({{1, 31, 17}, {33, 257, 31}, {257, 129, 33}, {70, 40, 100}}, 2000, true));
}

TEST(LinearCuda, FallbackKernelResidual) {
  LINGUA_REQUIRE_GPU();
  ForceFallback force;
  uint32_t seed = 4000;
  for (Case c : {Case{1, 1, 1}, Case{31, 7, 130}, Case{33, 130, 7}, Case{257, 1024, 64}, Case{1, 64, 1024}})
    for (Dtypes d : kDtypes) {
      const uint64_t before = linear_cuda_fallback_count();
      seed += 10;
      // Same kernel, same inputs: in place and separate give the same bits.
      const Values separate = check_case(Device::cuda, residual_case(c, d, seed, false));
      const Values in_place = check_case(Device::cuda, residual_case(c, d, seed, true));
      EXPECT_TRUE(same_bits(separate["y"], in_place["y"], "y separate vs in place")) << c << " " << d;
      EXPECT_EQ(linear_cuda_fallback_count(), before + 2) << c << " " << d;
    }
}
#endif

// x, w and dy (seeds seed, seed + 1, seed + 2) in bf16 on the GPU.
struct GpuInputs {
  DeviceTensor x, w, dy;
  GpuInputs(Case c, uint32_t seed)
      : x({c.N, c.in}, DType::bf16), w({c.out, c.in}, DType::bf16), dy({c.N, c.out}, DType::bf16) {
    x.upload(random_vector(c.N * c.in, seed));
    w.upload(random_vector(c.out * c.in, seed + 1));
    dy.upload(random_vector(c.N * c.out, seed + 2));
  }
};

TEST(LinearCuda, DwAccumulatesAndGradientsAreOptional) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{33, 257, 31}, Case{128, 1024, 512}}) {
    const GpuInputs in(c, 7);
    const Tensor X = in.x.t, W = in.w.t, DY = in.dy.t;
    DeviceTensor once({c.out, c.in}, DType::f32), twice({c.out, c.in}, DType::f32);
    once.zero();
    twice.zero();
    linear_backward(X, W, DY, Tensor(), once.t);
    for (int call = 0; call < 2; ++call) linear_backward(X, W, DY, Tensor(), twice.t);
    auto expected = once.download();
    for (float& v : expected) v *= 2;
    EXPECT_TRUE(close(twice.download(), expected, 1e-6, "dw twice")) << c;

    // dx alone equals dx computed together with dw
    DeviceTensor dx_alone({c.N, c.in}, DType::bf16), dx_both({c.N, c.in}, DType::bf16), dw({c.out, c.in}, DType::f32);
    dx_alone.poison();
    dx_both.poison();
    dw.zero();
    linear_backward(X, W, DY, dx_alone.t, Tensor());
    linear_backward(X, W, DY, dx_both.t, dw.t);
    EXPECT_EQ(dx_alone.bytes(), dx_both.bytes()) << c;
    EXPECT_EQ(dw.bytes(), once.bytes()) << c;
    linear_backward(X, W, DY, Tensor(), Tensor());  // nothing to do
    cuda_synchronize();
  }
}

TEST(LinearCuda, Deterministic) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{257, 129, 33}, Case{128, 1024, 512}, Case{4096, 256, 64}}) {
    const GpuInputs in(c, 11);
    const Tensor X = in.x.t, W = in.w.t, DY = in.dy.t;
    std::vector<uint8_t> first[3];
    for (int run = 0; run < 2; ++run) {
      DeviceTensor y({c.N, c.out}, DType::bf16), dx({c.N, c.in}, DType::bf16), dw({c.out, c.in}, DType::f32);
      y.poison();
      dx.poison();
      dw.zero();
      linear_forward(X, W, y.t);
      linear_backward(X, W, DY, dx.t, dw.t);
      std::vector<uint8_t> got[3] = {y.bytes(), dx.bytes(), dw.bytes()};
      for (int i = 0; i < 3; ++i) {
        if (run == 0)
          first[i] = got[i];
        else
          EXPECT_EQ(got[i], first[i]) << c << " output " << i;
      }
    }
  }
}

TEST(LinearCuda, ResidualDeterministic) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{257, 130, 1024}, Case{128, 1024, 512}, Case{4096, 256, 64}, Case{33, 1024, 7}})
    for (Dtypes d : {Dtypes{DType::bf16, DType::f32}, Dtypes{DType::bf16, DType::bf16}})
      for (bool aliased : {false, true}) {
        const Values first = check_case(Device::cuda, residual_case(c, d, 51, aliased));
        const Values second = check_case(Device::cuda, residual_case(c, d, 51, aliased));
        EXPECT_TRUE(same_bits(first["y"], second["y"], "y")) << c << " " << d << (aliased ? " in place" : " separate");
      }
}

TEST(LinearCuda, EmptyDimensions) {
  LINGUA_REQUIRE_GPU();
  // Empty tensors have no memory (null data).
  auto none = [](std::initializer_list<int64_t> dims, DType dt) { return Tensor(nullptr, dims, dt, Device::cuda); };
  // in == 0: y is all zeros (an empty sum), dw untouched
  DeviceTensor y({3, 5}, DType::f32);
  y.poison();
  linear_forward(none({3, 0}, DType::bf16), none({5, 0}, DType::bf16), y.t);
  EXPECT_EQ(y.download(), std::vector<float>(15, 0.0f));
  // out == 0: dx written as zeros, unless accumulated
  DeviceTensor x({3, 4}, DType::bf16), dx({3, 4}, DType::bf16);
  dx.poison();
  linear_backward(x.t, none({0, 4}, DType::bf16), none({3, 0}, DType::bf16), dx.t, none({0, 4}, DType::f32));
  EXPECT_EQ(dx.download(), std::vector<float>(12, 0.0f));
  // N == 0: nothing happens; dw keeps its value
  DeviceTensor w({5, 4}, DType::bf16), dw({5, 4}, DType::f32);
  dw.upload(std::vector<float>(20, 1.5f));
  linear_backward(none({0, 4}, DType::bf16), w.t, none({0, 5}, DType::bf16), none({0, 4}, DType::bf16), dw.t);
  EXPECT_EQ(dw.download(), std::vector<float>(20, 1.5f));
  // in == 0 with a residual: y = residual (copied, or left as it is in place)
  const auto r = random_vector(15, 61);
  DeviceTensor res({3, 5}, DType::f32);
  res.upload(r);
  y.poison();
  linear_forward(none({3, 0}, DType::bf16), none({5, 0}, DType::bf16), y.t, res.t);
  EXPECT_EQ(y.download(), r);
  linear_forward(none({3, 0}, DType::bf16), none({5, 0}, DType::bf16), res.t, res.t);
  EXPECT_EQ(res.download(), r);
}

TEST(LinearCuda, ArgumentErrors) {
  LINGUA_REQUIRE_GPU();
  const int64_t N = 3, in = 5, out = 7;
  // f32-sized buffers, viewed with the dtype (and shape) each check needs
  DeviceTensor x({N, in}, DType::f32), w({out, in}, DType::f32), y({N, out}, DType::f32), dx({N, in}, DType::f32),
      dw({out, in}, DType::f32);
  std::vector<float> host(out * in);
  const Tensor X = x.view({N, in}, DType::bf16), W = w.view({out, in}, DType::bf16);
  const Tensor Y = y.view({N, out}, DType::bf16), DX = dx.view({N, in}, DType::bf16), DW = dw.t;
  // dtypes
  EXPECT_THROW(linear_forward(X, w.view({out, in}, DType::f32), Y), Error);
  EXPECT_THROW(linear_forward(x.view({N, in}, DType::f32), w.view({out, in}, DType::f32), Y), Error);  // f32 -> bf16
  EXPECT_THROW(linear_forward(x.view({N, in}, DType::i32), w.view({out, in}, DType::i32), Y), Error);
  EXPECT_THROW(linear_backward(X, W, y.view({N, out}, DType::f32), DX, DW), Error);
  EXPECT_THROW(linear_backward(X, W, Y, DX, dw.view({out, in}, DType::bf16)), Error);
  // devices
  EXPECT_THROW(linear_forward(X, Tensor(host.data(), {out, in}), Y), Error);
  EXPECT_THROW(linear_backward(X, W, Y, Tensor(host.data(), {N, in}), DW), Error);
  // shapes
  EXPECT_THROW(linear_forward(X, w.view({in, out}, DType::bf16), Y), Error);
  EXPECT_THROW(linear_forward(X, W, y.view({out, N}, DType::bf16)), Error);
  EXPECT_THROW(linear_forward(x.view({N * in}, DType::bf16), W, Y), Error);
  EXPECT_THROW(linear_backward(X, W, Y, dx.view({in, N}, DType::bf16), DW), Error);
  EXPECT_THROW(linear_backward(X, W, Y, DX, dw.view({in, out}, DType::f32)), Error);
  try {
    linear_forward(X, w.view({out, in}, DType::f32), Y);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear_forward: argument 'w'"), std::string::npos) << e.what();
  }
}

TEST(LinearCuda, ResidualArgumentErrors) {
  LINGUA_REQUIRE_GPU();
  const int64_t N = 3, in = 5, out = 7;
  DeviceTensor x({N, in}, DType::bf16), w({out, in}, DType::bf16), halves({2 * N * out}, DType::f32);
  x.zero();
  w.zero();
  halves.zero();
  const Tensor X = x.t, W = w.t;
  char* base = static_cast<char*>(halves.t.data);
  auto f32_at = [&](int64_t element) { return Tensor(base + element * 4, {N, out}, DType::f32, Device::cuda); };
  const Tensor Y = f32_at(0);
  // partial overlaps, either way round
  for (auto [y_at, r_at] : {std::pair<int64_t, int64_t>{0, 1}, {1, 0}, {0, N * out - 1}, {N * out - 1, 0}}) {
    try {
      linear_forward(X, W, f32_at(y_at), f32_at(r_at));
      ADD_FAILURE() << "no error for y at " << y_at << ", residual at " << r_at;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("linear_forward: argument 'residual'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("overlaps"), std::string::npos) << e.what();
    }
  }
  // disjoint halves of one allocation are fine
  linear_forward(X, W, Y, f32_at(N * out));
  cuda_synchronize();
  // dtype (must be y's), device, shape
  EXPECT_THROW(linear_forward(X, W, Y, Tensor(base + N * out * 4, {N, out}, DType::bf16, Device::cuda)), Error);
  EXPECT_THROW(linear_forward(X, W, Tensor(base, {N, out}, DType::bf16, Device::cuda), f32_at(N * out)), Error);
  std::vector<float> host(N * out);
  EXPECT_THROW(linear_forward(X, W, Y, Tensor(host.data(), {N, out})), Error);
  EXPECT_THROW(linear_forward(X, W, Y, Tensor(base + N * out * 4, {out, N}, DType::f32, Device::cuda)), Error);
}

}  // namespace
