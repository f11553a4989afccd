// RMSNorm on CUDA against the fp32 CPU reference run on the same (bf16-rounded) inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

constexpr float kEps = 1e-5f;

double tol(DType out) { return out == DType::bf16 ? 1e-2 : 1e-5; }

struct Case {
  int64_t N, D;
};
// 12000: the largest D whose partial dw lives in shared memory; 12289 and 16384 use global memory.
const Case kCases[] = {{1, 7}, {31, 33}, {33, 1023}, {257, 1024}, {31, 4096}, {3, 12000}, {33, 16384}, {3, 12289}};
const DType kTypes[] = {DType::f32, DType::bf16};

void cpu_forward(const std::vector<float>& x, const std::vector<float>& w, Case c, std::vector<float>& y,
                 std::vector<float>& rstd) {
  y.assign(c.N * c.D, 0.0f);
  rstd.assign(c.N, 0.0f);
  rmsnorm_forward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), kEps, Tensor(y.data(), {c.N, c.D}),
                  Tensor(rstd.data(), {c.N}));
}

TEST(RMSNormCuda, ForwardMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : kCases)
    for (DType xt : kTypes)
      for (DType yt : kTypes)
        for (int64_t offset : {0, 1}) {  // offset 1: misaligned, the scalar path
          if (offset && c.D % 8) continue;
          auto x = as_dtype(random_vector(c.N * c.D, 1, -2.0f, 2.0f), xt);
          auto w = random_vector(c.D, 2, 0.5f, 1.5f);
          std::vector<float> y_ref, r_ref;
          cpu_forward(x, w, c, y_ref, r_ref);
          DeviceTensor dx({c.N, c.D}, xt, offset), dw({c.D}, DType::f32), dy({c.N, c.D}, yt), dr({c.N}, DType::f32);
          dx.upload(x);
          dw.upload(w);
          dy.poison();
          dr.poison();
          rmsnorm_forward(dx.t, dw.t, kEps, dy.t, dr.t);
          const std::string what = std::to_string(c.N) + "x" + std::to_string(c.D) + " x " + dtype_name(xt) +
                                   " y " + dtype_name(yt) + " offset " + std::to_string(offset);
          EXPECT_LT(rel_l2(dy.download(), y_ref), tol(yt)) << what;
          EXPECT_LT(rel_l2(dr.download(), r_ref), 1e-5) << what;
        }
}

struct BwdOut {
  std::vector<float> dx, dw;
};

// CPU reference for the backward on the values the GPU tensors hold.
BwdOut cpu_backward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& rstd,
                    const std::vector<float>& dy, std::vector<float> dx, std::vector<float> dw, Case c, bool acc) {
  rmsnorm_backward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), Tensor(rstd.data(), {c.N}),
                   Tensor(dy.data(), {c.N, c.D}), Tensor(dx.data(), {c.N, c.D}), Tensor(dw.data(), {c.D}), acc);
  return {dx, dw};
}

TEST(RMSNormCuda, BackwardMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : kCases)
    for (DType xt : kTypes)
      for (DType gt : kTypes)
        for (DType dxt : kTypes)
          for (bool acc : {false, true}) {
            // Keep the test fast: every dtype mix on the small cases, two mixes on the large ones.
            if (c.N * c.D > 40000 && !(xt == gt && gt == dxt)) continue;
            auto x = as_dtype(random_vector(c.N * c.D, 3, -2.0f, 2.0f), xt);
            auto w = random_vector(c.D, 4, 0.5f, 1.5f);
            auto g = as_dtype(random_vector(c.N * c.D, 5), gt);
            auto dx0 = as_dtype(random_vector(c.N * c.D, 6), dxt);
            auto dw0 = random_vector(c.D, 7);
            std::vector<float> y, rstd;
            cpu_forward(x, w, c, y, rstd);
            BwdOut ref = cpu_backward(x, w, rstd, g, dx0, dw0, c, acc);
            DeviceTensor d_x({c.N, c.D}, xt), d_w({c.D}, DType::f32), d_r({c.N}, DType::f32), d_g({c.N, c.D}, gt),
                d_dx({c.N, c.D}, dxt), d_dw({c.D}, DType::f32);
            d_x.upload(x);
            d_w.upload(w);
            d_r.upload(rstd);
            d_g.upload(g);
            if (acc)
              d_dx.upload(dx0);
            else
              d_dx.poison();
            d_dw.upload(dw0);
            rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t, acc);
            const std::string what = std::to_string(c.N) + "x" + std::to_string(c.D) + " x " + dtype_name(xt) +
                                     " dy " + dtype_name(gt) + " dx " + dtype_name(dxt) + " acc " +
                                     std::to_string(acc);
            EXPECT_LT(rel_l2(d_dx.download(), ref.dx), tol(dxt)) << what;
            // dw: fp32 accumulation over rows in a different order than the CPU's double sum.
            EXPECT_LT(rel_l2(d_dw.download(), ref.dw), 1e-5) << what;
          }
}

TEST(RMSNormCuda, DwAccumulatesAndBackwardIsDeterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{4099, 1024}, Case{257, 4096}, Case{513, 33}}) {  // several rows per block
    auto x = as_dtype(random_vector(c.N * c.D, 8, -2.0f, 2.0f), DType::bf16);
    auto w = random_vector(c.D, 9, 0.5f, 1.5f);
    auto g = as_dtype(random_vector(c.N * c.D, 10), DType::bf16);
    std::vector<float> y, rstd;
    cpu_forward(x, w, c, y, rstd);
    DeviceTensor d_x({c.N, c.D}, DType::bf16), d_w({c.D}, DType::f32), d_r({c.N}, DType::f32), d_g({c.N, c.D}, DType::bf16),
        d_dx({c.N, c.D}, DType::f32), d_dw({c.D}, DType::f32);
    d_x.upload(x);
    d_w.upload(w);
    d_r.upload(rstd);
    d_g.upload(g);
    d_dw.upload(std::vector<float>(c.D, 0.0f));
    rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t);
    const auto dx1 = d_dx.bytes();
    const auto dw1 = d_dw.download();
    d_dx.poison();
    d_dw.upload(std::vector<float>(c.D, 0.0f));
    rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t);
    EXPECT_EQ(d_dx.bytes(), dx1) << c.N << "x" << c.D;
    const auto dw2 = d_dw.download();
    EXPECT_EQ(0, std::memcmp(dw1.data(), dw2.data(), dw1.size() * 4)) << "dw differs between runs, " << c.N;
    // A second call adds the same partial sums again: dw = dw1 + dw1 exactly.
    rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t);
    const auto dw3 = d_dw.download();
    for (int64_t j = 0; j < c.D; ++j) ASSERT_EQ(dw3[j], dw1[j] + dw1[j]) << j;
    // And against the CPU.
    BwdOut ref = cpu_backward(x, w, rstd, g, std::vector<float>(c.N * c.D), std::vector<float>(c.D, 0.0f), c, false);
    EXPECT_LT(rel_l2(dw1, ref.dw), 1e-5) << c.N << "x" << c.D;
    EXPECT_LT(rel_l2(d_dx.download(), ref.dx), 1e-5) << c.N << "x" << c.D;
  }
}

TEST(RMSNormCuda, DxMayAliasDy) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Case c{33, 1024};
  for (DType t : kTypes) {
    auto x = random_vector(c.N * c.D, 11, -2.0f, 2.0f);
    auto w = random_vector(c.D, 12, 0.5f, 1.5f);
    auto g = random_vector(c.N * c.D, 13);
    std::vector<float> y, rstd;
    cpu_forward(x, w, c, y, rstd);
    DeviceTensor d_x({c.N, c.D}, DType::f32), d_w({c.D}, DType::f32), d_r({c.N}, DType::f32), d_g({c.N, c.D}, t),
        d_dx({c.N, c.D}, t), d_dw({c.D}, DType::f32);
    d_x.upload(x);
    d_w.upload(w);
    d_r.upload(rstd);
    d_g.upload(g);
    d_dw.upload(std::vector<float>(c.D, 0.0f));
    rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t);
    const auto dw_separate = d_dw.download();
    d_dw.upload(std::vector<float>(c.D, 0.0f));
    rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_g.t, d_dw.t);  // in place: dx = dy
    EXPECT_EQ(d_g.bytes(), d_dx.bytes()) << dtype_name(t);
    EXPECT_EQ(d_dw.download(), dw_separate) << dtype_name(t);
  }
}

// The model's call (x, dy, dx f32, accumulate, dx_copy f32 or bf16) and dtype mixes at odd sizes,
// aligned (16-byte path) and misaligned (scalar path): dx and dw against the CPU, dx_copy equal to
// dx converted to its dtype.
TEST(RMSNormCuda, BackwardWithCopyMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  struct Mix {
    DType x, dy, dx, copy;
    bool acc;
  };
  const Mix mixes[] = {{DType::f32, DType::f32, DType::f32, DType::bf16, true},
                       {DType::f32, DType::f32, DType::f32, DType::f32, true},
                       {DType::f32, DType::f32, DType::f32, DType::bf16, false},
                       {DType::bf16, DType::bf16, DType::bf16, DType::f32, false},
                       {DType::bf16, DType::f32, DType::bf16, DType::bf16, true}};
  for (int64_t N : {1, 31, 33, 257})
    for (int64_t D : {1, 7, 64, 1000, 1024, 2048, 4104})
      for (const Mix& m : mixes)
        for (int64_t offset : {0, 1}) {
          if (offset && D % 8) continue;
          const Case c{N, D};
          auto x = as_dtype(random_vector(N * D, 30, -2.0f, 2.0f), m.x);
          auto w = random_vector(D, 31, 0.5f, 1.5f);
          auto g = as_dtype(random_vector(N * D, 32), m.dy);
          auto dx0 = as_dtype(random_vector(N * D, 33), m.dx);
          auto dw0 = random_vector(D, 34);
          std::vector<float> y, rstd;
          cpu_forward(x, w, c, y, rstd);
          BwdOut ref = cpu_backward(x, w, rstd, g, dx0, dw0, c, m.acc);
          DeviceTensor d_x({N, D}, m.x, offset), d_w({D}, DType::f32), d_r({N}, DType::f32), d_g({N, D}, m.dy, offset),
              d_dx({N, D}, m.dx, offset), d_dw({D}, DType::f32), d_c({N, D}, m.copy, offset);
          d_x.upload(x);
          d_w.upload(w);
          d_r.upload(rstd);
          d_g.upload(g);
          if (m.acc)
            d_dx.upload(dx0);
          else
            d_dx.poison();
          d_dw.upload(dw0);
          d_c.poison();
          rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t, m.acc, d_c.t);
          const std::string what = std::to_string(N) + "x" + std::to_string(D) + " x " + dtype_name(m.x) + " dy " +
                                   dtype_name(m.dy) + " dx " + dtype_name(m.dx) + " copy " + dtype_name(m.copy) +
                                   " acc " + std::to_string(m.acc) + " offset " + std::to_string(offset);
          const auto dx = d_dx.download(), copy = d_c.download();
          if (D > 1) {
            EXPECT_LT(rel_l2(dx, ref.dx), tol(m.dx)) << what;
            EXPECT_LT(rel_l2(copy, ref.dx), std::max(tol(m.dx), tol(m.copy))) << what;
          } else {
            // dx = r w dy (1 - x^2 r^2) + old cancels (x^2 r^2 ~ 1): compare to the terms' size.
            for (int64_t n = 0; n < N; ++n) {
              const double scale = 2 * std::fabs(rstd[n] * w[0] * g[n]) + (m.acc ? std::fabs(dx0[n]) : 0.0);
              EXPECT_LE(std::fabs(dx[n] - ref.dx[n]), tol(m.dx) * scale) << what << " row " << n;
              EXPECT_LE(std::fabs(copy[n] - ref.dx[n]), std::max(tol(m.dx), tol(m.copy)) * scale) << what;
            }
          }
          EXPECT_EQ(copy, as_dtype(dx, m.copy)) << what;
          EXPECT_LT(rel_l2(d_dw.download(), ref.dw), 1e-5) << what;
        }
}

// Same inputs, same bits: dx, dx_copy and dw, at the model's shapes (scaled down in N) and at a
// size with a single block; dw of a second call is exactly twice dw.
TEST(RMSNormCuda, BackwardWithCopyIsDeterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (Case c : {Case{4099, 1024}, Case{2053, 2048}, Case{1029, 4104}, Case{13, 1000}}) {
    auto x = random_vector(c.N * c.D, 40, -2.0f, 2.0f);
    auto w = random_vector(c.D, 41, 0.5f, 1.5f);
    auto g = random_vector(c.N * c.D, 42);
    auto dx0 = random_vector(c.N * c.D, 43);
    std::vector<float> y, rstd;
    cpu_forward(x, w, c, y, rstd);
    DeviceTensor d_x({c.N, c.D}, DType::f32), d_w({c.D}, DType::f32), d_r({c.N}, DType::f32), d_g({c.N, c.D}, DType::f32),
        d_dx({c.N, c.D}, DType::f32), d_dw({c.D}, DType::f32), d_c({c.N, c.D}, DType::bf16);
    d_x.upload(x);
    d_w.upload(w);
    d_r.upload(rstd);
    d_g.upload(g);
    std::vector<uint8_t> dx1, c1, dw1;
    for (int run = 0; run < 2; ++run) {
      d_dx.upload(dx0);
      d_dw.upload(std::vector<float>(c.D, 0.0f));
      d_c.poison();
      rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t, true, d_c.t);
      if (run == 0) {
        dx1 = d_dx.bytes(), c1 = d_c.bytes(), dw1 = d_dw.bytes();
        continue;
      }
      EXPECT_EQ(d_dx.bytes(), dx1) << c.N << "x" << c.D;
      EXPECT_EQ(d_c.bytes(), c1) << c.N << "x" << c.D;
      EXPECT_EQ(d_dw.bytes(), dw1) << c.N << "x" << c.D;
    }
    const auto dw_once = d_dw.download();
    rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t, true, d_c.t);
    const auto dw_twice = d_dw.download();
    for (int64_t j = 0; j < c.D; ++j) ASSERT_EQ(dw_twice[j], dw_once[j] + dw_once[j]) << j;
    BwdOut ref = cpu_backward(x, w, rstd, g, dx0, std::vector<float>(c.D, 0.0f), c, true);
    EXPECT_LT(rel_l2(dw_once, ref.dw), 1e-5) << c.N << "x" << c.D;
  }
}

// In place (dx = dy), with accumulation (dx = dy + gradient) and a bf16 copy, on every path.
TEST(RMSNormCuda, DxMayAliasDyWithCopy) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (int64_t D : {7, 1000, 1024, 2048, 4104})
    for (bool acc : {false, true}) {
      const Case c{37, D};
      auto x = random_vector(c.N * c.D, 50, -2.0f, 2.0f);
      auto w = random_vector(c.D, 51, 0.5f, 1.5f);
      auto g = random_vector(c.N * c.D, 52);
      std::vector<float> y, rstd;
      cpu_forward(x, w, c, y, rstd);
      DeviceTensor d_x({c.N, c.D}, DType::f32), d_w({c.D}, DType::f32), d_r({c.N}, DType::f32), d_g({c.N, c.D}, DType::f32),
          d_dx({c.N, c.D}, DType::f32), d_dw({c.D}, DType::f32), d_c({c.N, c.D}, DType::bf16);
      d_x.upload(x);
      d_w.upload(w);
      d_r.upload(rstd);
      d_g.upload(g);
      d_dx.upload(g);  // separate dx holding dy: the same result as in place, also with acc
      d_dw.upload(std::vector<float>(c.D, 0.0f));
      rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_dx.t, d_dw.t, acc, d_c.t);
      const auto dx_separate = d_dx.bytes(), c_separate = d_c.bytes(), dw_separate = d_dw.bytes();
      d_dw.upload(std::vector<float>(c.D, 0.0f));
      d_c.poison();
      rmsnorm_backward(d_x.t, d_w.t, d_r.t, d_g.t, d_g.t, d_dw.t, acc, d_c.t);
      EXPECT_EQ(d_g.bytes(), dx_separate) << D << " acc " << acc;
      EXPECT_EQ(d_c.bytes(), c_separate) << D << " acc " << acc;
      EXPECT_EQ(d_dw.bytes(), dw_separate) << D << " acc " << acc;
    }
}

TEST(RMSNormCuda, Errors) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const int64_t N = 3, D = 8;
  DeviceTensor x({N, D}, DType::bf16), w({D}, DType::f32), wb({D}, DType::bf16), y({N, D}, DType::f32), r({N}, DType::f32),
      xi({N, D}, DType::i32), dxb({N, D}, DType::bf16), dw({D}, DType::f32);
  std::vector<float> host_y(N * D);
  EXPECT_THROW(rmsnorm_forward(x.t, wb.t, kEps, y.t, r.t), Error);                                    // w bf16
  EXPECT_THROW(rmsnorm_forward(xi.t, w.t, kEps, y.t, r.t), Error);                                    // x i32
  EXPECT_THROW(rmsnorm_forward(x.t, w.t, kEps, Tensor(host_y.data(), {N, D}), r.t), Error);           // y on CPU
  EXPECT_THROW(rmsnorm_forward(x.t, w.t, kEps, Tensor(y.t.data, {N, D + 1}, DType::f32, Device::cuda), r.t), Error);
  EXPECT_THROW(rmsnorm_forward(x.t, w.t, kEps, y.t, Tensor(r.t.data, {N + 1}, DType::f32, Device::cuda)), Error);
  try {
    rmsnorm_forward(x.t, wb.t, kEps, y.t, r.t);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rmsnorm_forward: argument 'w'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rmsnorm_backward(x.t, w.t, r.t, y.t, y.t, wb.t), Error);        // dw bf16
  EXPECT_THROW(rmsnorm_backward(x.t, w.t, r.t, y.t, dxb.t, xi.t), Error);      // dw i32 and wrong shape
  EXPECT_THROW(rmsnorm_backward(x.t, w.t, r.t, y.t, Tensor(y.t.data, {N, D}, DType::bf16, Device::cuda), dw.t),
               Error) << "dx aliases dy with another dtype";
  // dx_copy: must not overlap x, dy or dx; f32 or bf16; [N, D].
  DeviceTensor dy({N, D}, DType::f32), dxf({N, D}, DType::f32), copy({N, D}, DType::bf16);
  EXPECT_NO_THROW(rmsnorm_backward(x.t, w.t, r.t, dy.t, dxf.t, dw.t, true, copy.t));
  auto message = [&](const Tensor& dx_copy) -> std::string {
    try {
      rmsnorm_backward(x.t, w.t, r.t, dy.t, dxf.t, dw.t, true, dx_copy);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message(dxf.t).find("rmsnorm_backward: argument 'dx_copy' must not alias dx"), std::string::npos);
  EXPECT_NE(message(Tensor(static_cast<char*>(dxf.t.data) + 8, {N, D}, DType::bf16, Device::cuda))
                .find("must not alias dx"),
            std::string::npos);
  EXPECT_NE(message(dy.t).find("must not alias dy"), std::string::npos);
  EXPECT_NE(message(Tensor(x.t.data, {N, D}, DType::bf16, Device::cuda)).find("must not alias x"), std::string::npos);
  EXPECT_NE(message(Tensor(copy.t.data, {N, D}, DType::i32, Device::cuda)).find("argument 'dx_copy'"),
            std::string::npos);
  EXPECT_NE(message(Tensor(copy.t.data, {N, D - 1}, DType::bf16, Device::cuda)).find("argument 'dx_copy'"),
            std::string::npos);
  EXPECT_NE(message(Tensor(host_y.data(), {N, D})).find("argument 'dx_copy'"), std::string::npos);  // on the CPU
  // Empty batch: nothing to do.
  EXPECT_NO_THROW(rmsnorm_forward(Tensor(nullptr, {0, D}, DType::bf16, Device::cuda), w.t, kEps,
                                  Tensor(nullptr, {0, D}, DType::bf16, Device::cuda),
                                  Tensor(nullptr, {0}, DType::f32, Device::cuda)));
  cuda_synchronize();
}

}  // namespace
