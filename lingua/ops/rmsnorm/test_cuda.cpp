// RMSNorm on CUDA against the fp32 CPU reference (the op-test harness), and the GPU's own
// guarantees: deterministic backward, dw accumulation, dx aliasing dy.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

constexpr float kEps = 1e-5f;

struct Case {
  int64_t N, D;
};
std::ostream& operator<<(std::ostream& os, Case c) { return os << c.N << "x" << c.D; }

// 12000: the largest D whose partial dw lives in shared memory; 12289 and 16384 use global memory.
const Case kCases[] = {{1, 7}, {31, 33}, {33, 1023}, {257, 1024}, {31, 4096}, {3, 12000}, {33, 16384}, {3, 12289}};
const DType kTypes[] = {DType::f32, DType::bf16};

// rstd of the CPU forward on x [N, D] and w [D] (as the backward's input).
std::vector<float> cpu_rstd(const std::vector<float>& x, const std::vector<float>& w, Case c) {
  std::vector<float> y(c.N * c.D), rstd(c.N);
  rmsnorm_forward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), kEps, Tensor(y.data(), {c.N, c.D}),
                  Tensor(rstd.data(), {c.N}));
  return rstd;
}

std::vector<OpCase> forward_cases() {
  std::vector<OpCase> cs;
  for (Case c : kCases)
    for (DType xt : kTypes)
      for (DType yt : kTypes)
        for (int64_t offset : {0, 1}) {  // offset 1: misaligned, the scalar path
          if (offset && c.D % 8) continue;
          OpCase& k = cs.emplace_back("rmsnorm_forward");
          k.in("x", {c.N, c.D}, xt).uniform(-2.0f, 2.0f, 1).offset(offset);
          k.in("w", {c.D}).uniform(0.5f, 1.5f, 2);
          k.out("y", {c.N, c.D}, yt);
          k.out("rstd", {c.N}).tol(1e-5);
          k.run = [](OpArgs& a) { rmsnorm_forward(a["x"], a["w"], kEps, a["y"], a["rstd"]); };
        }
  return cs;
}

// One backward case: x, w, rstd (of the CPU forward), dy, then dx (written, or accumulated from
// its values), dw accumulated (fp32 over rows in another order than the CPU's double sum: 1e-5)
// and, when copy_dt is given, dx_copy. seed: x; w, dy, dx and dw take the next ones.
OpCase& backward_case(std::vector<OpCase>& cs, Case c, DType xt, DType gt, DType dxt, bool acc, uint32_t seed,
                      int64_t offset = 0, std::optional<DType> copy_dt = std::nullopt) {
  OpCase& k = cs.emplace_back("rmsnorm_backward", acc ? "accumulate_dx" : "");
  k.in("x", {c.N, c.D}, xt).uniform(-2.0f, 2.0f, seed).offset(offset);
  k.in("w", {c.D}).uniform(0.5f, 1.5f, seed + 1);
  k.in("rstd", {c.N}).from([c](const Values& v) { return cpu_rstd(v["x"], v["w"], c); });
  k.in("dy", {c.N, c.D}, gt).uniform(-1.0f, 1.0f, seed + 2).offset(offset);
  TensorSpec& dx = k.out("dx", {c.N, c.D}, dxt).offset(offset);
  if (acc) dx.accumulated().uniform(-1.0f, 1.0f, seed + 3);
  k.out("dw", {c.D}).accumulated().uniform(-1.0f, 1.0f, seed + 4).tol(1e-5);
  if (copy_dt) k.out("dx_copy", {c.N, c.D}, *copy_dt).offset(offset);
  k.run = [acc](OpArgs& a) {
    rmsnorm_backward(a["x"], a["w"], a["rstd"], a["dy"], a["dx"], a["dw"], acc, a.opt("dx_copy"));
  };
  return k;
}

std::vector<OpCase> backward_cases() {
  std::vector<OpCase> cs;
  for (Case c : kCases)
    for (DType xt : kTypes)
      for (DType gt : kTypes)
        for (DType dxt : kTypes)
          for (bool acc : {false, true}) {
            // Keep the test fast: every dtype mix on the small cases, two mixes on the large ones.
            if (c.N * c.D > 40000 && !(xt == gt && gt == dxt)) continue;
            backward_case(cs, c, xt, gt, dxt, acc, 3);
          }
  // Several rows per block, dw from zero.
  for (Case c : {Case{4099, 1024}, Case{257, 4096}, Case{513, 33}})
    backward_case(cs, c, DType::bf16, DType::bf16, DType::f32, false, 8).tensor("dw").fill(0.0f);
  return cs;
}

// The model's call (x, dy, dx f32, accumulate, dx_copy f32 or bf16) and dtype mixes at odd sizes,
// aligned (16-byte path) and misaligned (scalar path): dx, dx_copy and dw against the CPU, and
// dx_copy equal to dx converted to its dtype.
std::vector<OpCase> copy_cases() {
  struct Mix {
    DType x, dy, dx, copy;
    bool acc;
  };
  const Mix mixes[] = {{DType::f32, DType::f32, DType::f32, DType::bf16, true},
                       {DType::f32, DType::f32, DType::f32, DType::f32, true},
                       {DType::f32, DType::f32, DType::f32, DType::bf16, false},
                       {DType::bf16, DType::bf16, DType::bf16, DType::f32, false},
                       {DType::bf16, DType::f32, DType::bf16, DType::bf16, true}};
  std::vector<OpCase> cs;
  for (int64_t N : {1, 31, 33, 257})
    for (int64_t D : {1, 7, 64, 1000, 1024, 2048, 4104})
      for (const Mix& m : mixes)
        for (int64_t offset : {0, 1}) {
          if (offset && D % 8) continue;
          OpCase& k = backward_case(cs, {N, D}, m.x, m.dy, m.dx, m.acc, 30, offset, m.copy);
          const double tol = dtype_tol(m.dx), copy_tol = std::max(dtype_tol(m.dx), dtype_tol(m.copy));
          k.tensor("dx_copy").tol(copy_tol);
          if (D == 1) {
            // dx = r w dy (1 - x^2 r^2) + old cancels (x^2 r^2 ~ 1): compare to the terms' size.
            for (auto [name, t] : {std::pair{"dx", tol}, std::pair{"dx_copy", copy_tol}})
              k.tensor(name).compare([t = t](const std::vector<float>& got, const std::vector<float>& ref,
                                              const Values& in) {
                for (size_t n = 0; n < ref.size(); ++n) {
                  const double scale = 2 * std::fabs(in["rstd"][n] * in["w"][0] * in["dy"][n]) +
                                       (in.has("dx") ? std::fabs(in["dx"][n]) : 0.0);
                  if (!(std::fabs(got[n] - ref[n]) <= t * scale))
                    return ::testing::AssertionFailure() << "row " << n << ": " << got[n] << " vs " << ref[n];
                }
                return ::testing::AssertionSuccess();
              });
          }
          k.check = [](const Values&, const Values& got, const Values&) {
            EXPECT_TRUE(same_bits(got["dx_copy"], as_dtype(got["dx"], got.dtype("dx_copy")), "dx_copy vs dx"));
          };
        }
  // The model's shapes (scaled down in N) and a single block.
  for (Case c : {Case{4099, 1024}, Case{2053, 2048}, Case{1029, 4104}, Case{13, 1000}}) {
    OpCase& k = backward_case(cs, c, DType::f32, DType::f32, DType::f32, true, 40, 0, DType::bf16);
    k.tensor("dw").fill(0.0f);
    k.tensor("dx_copy").tol(dtype_tol(DType::bf16));
  }
  return cs;
}

LINGUA_OP_TEST(RMSNorm, ForwardMatchesCpu, forward_cases())
LINGUA_OP_TEST(RMSNorm, BackwardMatchesCpu, backward_cases())
LINGUA_OP_TEST(RMSNorm, BackwardWithCopyMatchesCpu, copy_cases())

// The backward's tensors on the GPU: x, w, rstd (of the CPU forward) and dy uploaded (seeds seed,
// seed + 1, seed + 2); dx, dw and dx_copy allocated.
struct GpuBackward {
  std::vector<float> dy_values;
  DeviceTensor x, w, rstd, dy, dx, dw, copy;
  GpuBackward(Case c, DType xt, DType gt, DType dxt, DType copy_dt, uint32_t seed)
      : dy_values(random_vector(c.N * c.D, seed + 2)), x({c.N, c.D}, xt), w({c.D}, DType::f32),
        rstd({c.N}, DType::f32), dy({c.N, c.D}, gt), dx({c.N, c.D}, dxt), dw({c.D}, DType::f32),
        copy({c.N, c.D}, copy_dt) {
    const auto xv = as_dtype(random_vector(c.N * c.D, seed, -2.0f, 2.0f), xt);
    const auto wv = random_vector(c.D, seed + 1, 0.5f, 1.5f);
    x.upload(xv);
    w.upload(wv);
    rstd.upload(cpu_rstd(xv, wv, c));
    dy.upload(dy_values);
  }
  void run(const Tensor& dx_, bool acc, bool with_copy) {
    rmsnorm_backward(x.t, w.t, rstd.t, dy.t, dx_, dw.t, acc, with_copy ? copy.t : Tensor());
  }
  // dw after one more call from its current value: exactly twice `once` (the same partial sums).
  void expect_dw_doubles(const std::vector<float>& once, bool acc, bool with_copy, Case c) {
    run(dx.t, acc, with_copy);
    auto twice = once;
    for (float& v : twice) v += v;
    EXPECT_TRUE(same_bits(dw.download(), twice, "dw after a second call")) << c;
  }
};

TEST(RMSNormCuda, DwAccumulatesAndBackwardIsDeterministic) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{4099, 1024}, Case{257, 4096}, Case{513, 33}}) {  // several rows per block
    GpuBackward g(c, DType::bf16, DType::bf16, DType::f32, DType::f32, 8);
    g.dw.zero();
    g.run(g.dx.t, false, false);
    const auto dx1 = g.dx.bytes(), dw1 = g.dw.bytes();
    g.dx.poison();
    g.dw.zero();
    g.run(g.dx.t, false, false);
    EXPECT_EQ(g.dx.bytes(), dx1) << c;
    EXPECT_EQ(g.dw.bytes(), dw1) << "dw differs between runs, " << c;
    g.expect_dw_doubles(g.dw.download(), false, false, c);
  }
}

TEST(RMSNormCuda, DxMayAliasDy) {
  LINGUA_REQUIRE_GPU();
  for (DType t : kTypes) {
    GpuBackward g({33, 1024}, DType::f32, t, t, t, 11);
    g.dw.zero();
    g.run(g.dx.t, false, false);
    const auto dw_separate = g.dw.bytes();
    g.dw.zero();
    g.run(g.dy.t, false, false);  // in place: dx = dy
    EXPECT_EQ(g.dy.bytes(), g.dx.bytes()) << dtype_name(t);
    EXPECT_EQ(g.dw.bytes(), dw_separate) << dtype_name(t);
  }
}

// Same inputs, same bits: dx, dx_copy and dw, at the model's shapes (scaled down in N) and at a
// size with a single block; dw of a second call is exactly twice dw.
TEST(RMSNormCuda, BackwardWithCopyIsDeterministic) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{4099, 1024}, Case{2053, 2048}, Case{1029, 4104}, Case{13, 1000}}) {
    GpuBackward g(c, DType::f32, DType::f32, DType::f32, DType::bf16, 40);
    const auto dx0 = random_vector(c.N * c.D, 43);
    std::vector<uint8_t> first[3];
    for (int run = 0; run < 2; ++run) {
      g.dx.upload(dx0);
      g.dw.zero();
      g.copy.poison();
      g.run(g.dx.t, true, true);
      const std::vector<uint8_t> got[3] = {g.dx.bytes(), g.copy.bytes(), g.dw.bytes()};
      for (int i = 0; i < 3; ++i) {
        if (run == 0)
          first[i] = got[i];
        else
          EXPECT_EQ(got[i], first[i]) << c << (i == 0 ? " dx" : i == 1 ? " dx_copy" : " dw");
      }
    }
    g.expect_dw_doubles(g.dw.download(), true, true, c);
  }
}

// In place (dx = dy), with accumulation (dx = dy + gradient) and a bf16 copy, on every path.
TEST(RMSNormCuda, DxMayAliasDyWithCopy) {
  LINGUA_REQUIRE_GPU();
  for (int64_t D : {7, 1000, 1024, 2048, 4104})
    for (bool acc : {false, true}) {
      GpuBackward g({37, D}, DType::f32, DType::f32, DType::f32, DType::bf16, 50);
      g.dx.upload(g.dy_values);  // separate dx holding dy: the same result as in place, also with acc
      g.dw.zero();
      g.run(g.dx.t, acc, true);
      const auto dx_separate = g.dx.bytes(), c_separate = g.copy.bytes(), dw_separate = g.dw.bytes();
      g.dw.zero();
      g.copy.poison();
      g.run(g.dy.t, acc, true);
      EXPECT_EQ(g.dy.bytes(), dx_separate) << D << " acc " << acc;
      EXPECT_EQ(g.copy.bytes(), c_separate) << D << " acc " << acc;
      EXPECT_EQ(g.dw.bytes(), dw_separate) << D << " acc " << acc;
    }
}

TEST(RMSNormCuda, Errors) {
  LINGUA_REQUIRE_GPU();
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
