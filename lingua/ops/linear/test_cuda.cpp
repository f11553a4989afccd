// GPU linear layer against the CPU reference run on the same (bf16-rounded) inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <iterator>
#include <optional>
#include <utility>

#include "lingua/core/cuda.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

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

struct Inputs {
  std::vector<float> x, w, dy;  // rounded to the input dtype
};
Inputs make_inputs(Case c, DType dt, uint32_t seed) {
  return {as_dtype(random_vector(c.N * c.in, seed), dt), as_dtype(random_vector(c.out * c.in, seed + 1), dt),
          as_dtype(random_vector(c.N * c.out, seed + 2), dt)};
}

void check_forward(Case c, Dtypes d, uint32_t seed) {
  const Inputs in = make_inputs(c, d.in, seed);
  std::vector<float> ref(c.N * c.out);
  linear_forward(Tensor(in.x.data(), {c.N, c.in}), Tensor(in.w.data(), {c.out, c.in}), Tensor(ref.data(), {c.N, c.out}));

  DeviceTensor x({c.N, c.in}, d.in), w({c.out, c.in}, d.in), y({c.N, c.out}, d.out);
  x.upload(in.x);
  w.upload(in.w);
  y.poison();
  linear_forward(x.t, w.t, y.t);
  EXPECT_LT(rel_l2(y.download(), ref), tolerance(d)) << c << " " << d;
}

void check_backward(Case c, Dtypes d, uint32_t seed) {
  const Inputs in = make_inputs(c, d.in, seed);
  const auto dw0 = random_vector(c.out * c.in, seed + 3);  // dw accumulates onto this
  std::vector<float> dx_ref(c.N * c.in), dw_ref = dw0;
  linear_backward(Tensor(in.x.data(), {c.N, c.in}), Tensor(in.w.data(), {c.out, c.in}),
                  Tensor(in.dy.data(), {c.N, c.out}), Tensor(dx_ref.data(), {c.N, c.in}),
                  Tensor(dw_ref.data(), {c.out, c.in}));

  DeviceTensor x({c.N, c.in}, d.in), w({c.out, c.in}, d.in), dy({c.N, c.out}, d.in);
  DeviceTensor dx({c.N, c.in}, d.out), dw({c.out, c.in}, DType::f32);
  x.upload(in.x);
  w.upload(in.w);
  dy.upload(in.dy);
  dw.upload(dw0);
  dx.poison();
  linear_backward(x.t, w.t, dy.t, dx.t, dw.t);
  EXPECT_LT(rel_l2(dx.download(), dx_ref), tolerance(d)) << "dx " << c << " " << d;
  EXPECT_LT(rel_l2(dw.download(), dw_ref), tolerance({d.in, DType::f32})) << "dw " << c << " " << d;

  // accumulate_dx adds to what is there
  const auto base = as_dtype(random_vector(c.N * c.in, seed + 4), d.out);
  std::vector<float> expected(base.size());
  for (size_t i = 0; i < base.size(); ++i) expected[i] = base[i] + dx_ref[i];
  DeviceTensor dx_acc({c.N, c.in}, d.out);
  dx_acc.upload(base);
  linear_backward(x.t, w.t, dy.t, dx_acc.t, Tensor(), true);
  EXPECT_LT(rel_l2(dx_acc.download(), expected), tolerance(d)) << "dx accumulated " << c << " " << d;
}

// y = x W^T + residual against the CPU (run in place on the same rounded inputs); the residual is
// a separate buffer (checked unchanged, y poisoned first) or y itself. Returns y's bytes.
std::vector<uint8_t> check_forward_residual(Case c, Dtypes d, uint32_t seed, bool aliased) {
  const Inputs in = make_inputs(c, d.in, seed);
  const auto r = as_dtype(random_vector(c.N * c.out, seed + 5, -4.0f, 4.0f), d.out);
  std::vector<float> ref = r;
  const Tensor REF(ref.data(), {c.N, c.out});
  linear_forward(Tensor(in.x.data(), {c.N, c.in}), Tensor(in.w.data(), {c.out, c.in}), REF, REF);

  DeviceTensor x({c.N, c.in}, d.in), w({c.out, c.in}, d.in), res({c.N, c.out}, d.out);
  std::optional<DeviceTensor> y;  // only when separate
  x.upload(in.x);
  w.upload(in.w);
  res.upload(r);
  if (aliased) {
    linear_forward(x.t, w.t, res.t, res.t);
  } else {
    y.emplace({c.N, c.out}, d.out);
    y->poison();
    linear_forward(x.t, w.t, y->t, res.t);
    EXPECT_TRUE(res.download() == r) << "residual modified: " << c << " " << d;
  }
  const DeviceTensor& result = aliased ? res : *y;
  // Relative to the size of the two terms, not of their sum: residual + product may cancel
  // (a single output element of 1e-5 relative error was seen at N 1, out 1).
  const std::vector<float> got = result.download();
  double diff = 0, scale_r = 0, scale_p = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
    scale_r += (double)r[i] * r[i];
    scale_p += ((double)ref[i] - r[i]) * ((double)ref[i] - r[i]);
  }
  EXPECT_LT(std::sqrt(diff) / std::max(std::sqrt(scale_r) + std::sqrt(scale_p), 1e-30), tolerance(d))
      << c << " " << d << (aliased ? " in place" : " separate");
  return result.bytes();
}

const int64_t kResidualN[] = {1, 31, 33, 257};
const int64_t kResidualDims[] = {1, 7, 64, 130, 1024};  // in and out

TEST(LinearCuda, ForwardMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  uint32_t seed = 1;
  for (Case c : kCases)
    for (Dtypes d : kDtypes) check_forward(c, d, seed += 10);
}

TEST(LinearCuda, BackwardMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  uint32_t seed = 1000;
  for (Case c : kCases)
    for (Dtypes d : kDtypes) check_backward(c, d, seed += 10);
}

TEST(LinearCuda, ResidualMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  uint32_t seed = 3000;
#ifdef LINGUA_CUDA
  const uint64_t fallbacks = linear_cuda_fallback_count();
#endif
  for (int64_t N : kResidualN)
    for (int64_t in : kResidualDims)
      for (int64_t out : kResidualDims)
        for (Dtypes d : kDtypes)
          for (bool aliased : {false, true}) check_forward_residual({N, in, out}, d, seed += 10, aliased);
#ifdef LINGUA_CUDA
  // Informational: sizes cuBLASLt had no (out-of-place capable) algorithm for.
  std::cout << "[   INFO   ] fallback kernel runs in this sweep: " << linear_cuda_fallback_count() - fallbacks
            << " of " << std::size(kResidualN) * std::size(kResidualDims) * std::size(kResidualDims) * 6 << "\n";
#endif
}

#ifdef LINGUA_CUDA
// The transformer's case (bf16 x / w, f32 residual stream) at an aligned size must run on
// cuBLASLt both in place and out of place, not on the fallback kernel.
TEST(LinearCuda, ResidualUsesCublasLt) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{128, 1024, 512}, Case{256, 512, 1024}})
    for (bool aliased : {false, true}) {
      const uint64_t before = linear_cuda_fallback_count();
      check_forward_residual(c, {DType::bf16, DType::f32}, 41, aliased);
      EXPECT_EQ(linear_cuda_fallback_count(), before) << c << (aliased ? " in place" : " separate");
    }
}
#endif

// The simple kernel used when cuBLASLt has no algorithm for a problem.
#ifdef LINGUA_CUDA
TEST(LinearCuda, FallbackKernelMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  struct Reset {
    ~Reset() { linear_cuda_force_fallback(false); }
  } reset;
  linear_cuda_force_fallback(true);
  uint32_t seed = 2000;
  for (Case c : {Case{1, 31, 17}, Case{33, 257, 31}, Case{257, 129, 33}, Case{70, 40, 100}})
    for (Dtypes d : kDtypes) {
      check_forward(c, d, seed += 10);
      check_backward(c, d, seed += 10);
    }
}

TEST(LinearCuda, FallbackKernelResidual) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  struct Reset {
    ~Reset() { linear_cuda_force_fallback(false); }
  } reset;
  linear_cuda_force_fallback(true);
  uint32_t seed = 4000;
  for (Case c : {Case{1, 1, 1}, Case{31, 7, 130}, Case{33, 130, 7}, Case{257, 1024, 64}, Case{1, 64, 1024}})
    for (Dtypes d : kDtypes) {
      const uint64_t before = linear_cuda_fallback_count();
      seed += 10;
      // Same kernel, same inputs: in place and separate give the same bits.
      const auto separate = check_forward_residual(c, d, seed, false);
      const auto in_place = check_forward_residual(c, d, seed, true);
      EXPECT_EQ(separate, in_place) << c << " " << d;
      EXPECT_EQ(linear_cuda_fallback_count(), before + 2) << c << " " << d;
    }
}
#endif

TEST(LinearCuda, DwAccumulatesAndGradientsAreOptional) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{33, 257, 31}, Case{128, 1024, 512}}) {
    const Inputs in = make_inputs(c, DType::bf16, 7);
    DeviceTensor x({c.N, c.in}, DType::bf16), w({c.out, c.in}, DType::bf16), dy({c.N, c.out}, DType::bf16);
    x.upload(in.x);
    w.upload(in.w);
    dy.upload(in.dy);
    const Tensor X = x.t, W = w.t, DY = dy.t;
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
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{257, 129, 33}, Case{128, 1024, 512}, Case{4096, 256, 64}}) {
    const Inputs in = make_inputs(c, DType::bf16, 11);
    DeviceTensor x({c.N, c.in}, DType::bf16), w({c.out, c.in}, DType::bf16), dy({c.N, c.out}, DType::bf16);
    x.upload(in.x);
    w.upload(in.w);
    dy.upload(in.dy);
    const Tensor X = x.t, W = w.t, DY = dy.t;
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
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{257, 130, 1024}, Case{128, 1024, 512}, Case{4096, 256, 64}, Case{33, 1024, 7}})
    for (Dtypes d : {Dtypes{DType::bf16, DType::f32}, Dtypes{DType::bf16, DType::bf16}})
      for (bool aliased : {false, true}) {
        const auto first = check_forward_residual(c, d, 51, aliased);
        const auto second = check_forward_residual(c, d, 51, aliased);
        EXPECT_EQ(first, second) << c << " " << d << (aliased ? " in place" : " separate");
      }
}

TEST(LinearCuda, EmptyDimensions) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
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
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
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
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
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
