// SwiGLU on CUDA against the fp32 CPU reference (the op-test harness); aliasing and the packed form.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/swiglu/swiglu.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, H;
};

// Forward and backward in one case: out, da and db against the CPU.
std::vector<OpCase> cases() {
  std::vector<OpCase> cs;
  for (Case c : {Case{1, 1}, Case{1, 7}, Case{31, 33}, Case{33, 1023}, Case{257, 1024}, Case{31, 4096}})
    for (DType dt : {DType::f32, DType::bf16})
      for (int64_t offset : {0, 1}) {  // offset 1: misaligned, element by element
        OpCase& k = cs.emplace_back("swiglu_forward+backward");
        k.in("a", {c.N, c.H}, dt).uniform(-6.0f, 6.0f, 1).offset(offset);
        k.in("b", {c.N, c.H}, dt).uniform(-2.0f, 2.0f, 2);
        k.in("dout", {c.N, c.H}, dt).uniform(-1.0f, 1.0f, 3);
        for (const char* out : {"out", "da", "db"}) k.out(out, {c.N, c.H}, dt);
        k.run = [](OpArgs& t) {
          swiglu_forward(t["a"], t["b"], t["out"]);
          swiglu_backward(t["a"], t["b"], t["dout"], t["da"], t["db"]);
        };
      }
  return cs;
}

LINGUA_OP_TEST(SwiGLU, ForwardAndBackwardMatchCpu, cases())

// a, b and dout uploaded to the GPU in dt; out, da and db allocated.
struct GpuSwiGLU {
  DeviceTensor a, b, g, out, da, db;
  GpuSwiGLU(int64_t N, int64_t H, DType dt, const std::vector<float>& av, const std::vector<float>& bv,
            const std::vector<float>& gv)
      : a({N, H}, dt), b({N, H}, dt), g({N, H}, dt), out({N, H}, dt), da({N, H}, dt), db({N, H}, dt) {
    a.upload(av);
    b.upload(bv);
    g.upload(gv);
  }
  void run() {  // forward into out, backward into da and db
    swiglu_forward(a.t, b.t, out.t);
    swiglu_backward(a.t, b.t, g.t, da.t, db.t);
  }
};

TEST(SwiGLUCuda, ExtremeInputsStayFinite) {
  LINGUA_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16}) {
    const std::vector<float> a = {-200.0f, -90.0f, 90.0f, 200.0f, 0.0f, -3e38f, 3e38f, 1.0f, 2.0f};
    GpuSwiGLU s(1, 9, dt, as_dtype(a, dt), std::vector<float>(9, 1.5f), std::vector<float>(9, 1.0f));
    s.run();
    const auto out = s.out.download(), da = s.da.download(), db = s.db.download();
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(std::isfinite(out[i]) && std::isfinite(da[i]) && std::isfinite(db[i])) << i;
    EXPECT_NEAR(out[3], 300.0f, 1e-3);
    EXPECT_NEAR(da[3], 1.5f, 1e-6);
    EXPECT_NEAR(out[0], 0.0f, 1e-6);
    EXPECT_NEAR(da[4], 0.75f, 1e-6);  // silu'(0) = 1/2
    EXPECT_EQ(out[5], 0.0f);          // sigmoid underflows to 0, not NaN
  }
}

TEST(SwiGLUCuda, OutputsMayAliasInputs) {
  LINGUA_REQUIRE_GPU();
  const int64_t N = 33, H = 1024;
  for (DType dt : {DType::f32, DType::bf16}) {
    GpuSwiGLU s(N, H, dt, random_vector(N * H, 4, -4.0f, 4.0f), random_vector(N * H, 5), random_vector(N * H, 6));
    s.run();
    swiglu_backward(s.a.t, s.b.t, s.g.t, s.a.t, s.b.t);  // da over a, db over b
    EXPECT_EQ(s.a.bytes(), s.da.bytes()) << dtype_name(dt);
    EXPECT_EQ(s.b.bytes(), s.db.bytes()) << dtype_name(dt);
  }
}

TEST(SwiGLUCuda, BackwardRecomputesTheOutputInPlace) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{1, 7}, Case{33, 1023}, Case{257, 1024}})
    for (DType dt : {DType::f32, DType::bf16}) {
      const int64_t n = c.N * c.H;
      GpuSwiGLU s(c.N, c.H, dt, random_vector(n, 7, -6.0f, 6.0f), random_vector(n, 8), random_vector(n, 9));
      s.run();
      // In place as the FFN calls it: da over a, db over b, the output over dout. Same bits.
      swiglu_backward(s.a.t, s.b.t, s.g.t, s.a.t, s.b.t, s.g.t);
      const std::string what = std::to_string(c.N) + "x" + std::to_string(c.H) + " " + dtype_name(dt);
      EXPECT_EQ(s.a.bytes(), s.da.bytes()) << what;
      EXPECT_EQ(s.b.bytes(), s.db.bytes()) << what;
      EXPECT_EQ(s.g.bytes(), s.out.bytes()) << what;
    }
}

TEST(SwiGLUCuda, PackedEqualsSeparate) {
  LINGUA_REQUIRE_GPU();
  for (Case c : {Case{1, 7}, Case{33, 1023}, Case{257, 1024}, Case{3, 2816}})
    for (DType dt : {DType::f32, DType::bf16}) {
      const int64_t N = c.N, H = c.H, n = N * H;
      const auto a = as_dtype(random_vector(n, 31, -6.0f, 6.0f), dt), b = as_dtype(random_vector(n, 32), dt),
                 g = as_dtype(random_vector(n, 33), dt);
      std::vector<float> ab(2 * n);
      for (int64_t r = 0; r < N; ++r)
        for (int64_t j = 0; j < H; ++j) ab[r * 2 * H + j] = a[r * H + j], ab[r * 2 * H + H + j] = b[r * H + j];
      GpuSwiGLU s(N, H, dt, a, b, g);
      DeviceTensor d_ab({N, 2 * H}, dt), d_pout({N, H}, dt), d_gp({N, H}, dt);
      d_gp.upload(g);
      d_ab.upload(ab);
      s.run();
      swiglu_forward_packed(d_ab.t, d_pout.t);
      swiglu_backward_packed(d_ab.t, d_gp.t, d_ab.t, d_gp.t);  // in place
      const std::string what = std::to_string(N) + "x" + std::to_string(H) + " " + dtype_name(dt);
      const auto out = s.out.download(), da = s.da.download(), db = s.db.download(), dab = d_ab.download();
      EXPECT_EQ(d_pout.download(), out) << what;
      EXPECT_EQ(d_gp.download(), out) << what;
      bool same = true;
      for (int64_t r = 0; r < N; ++r)
        for (int64_t j = 0; j < H; ++j)
          same &= dab[r * 2 * H + j] == da[r * H + j] && dab[r * 2 * H + H + j] == db[r * H + j];
      EXPECT_TRUE(same) << what;
    }
}

TEST(SwiGLUCuda, Errors) {
  LINGUA_REQUIRE_GPU();
  DeviceTensor a({3, 8}, DType::bf16), b({3, 8}, DType::f32), c({3, 8}, DType::bf16), i({3, 8}, DType::i32);
  std::vector<float> host(24);
  EXPECT_THROW(swiglu_forward(a.t, b.t, c.t), Error);  // mixed dtypes
  try {
    swiglu_forward(a.t, b.t, c.t);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("swiglu_forward: argument 'b'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(swiglu_forward(i.t, i.t, i.t), Error);
  EXPECT_THROW(swiglu_forward(a.t, c.t, Tensor(c.t.data, {8, 3}, DType::bf16, Device::cuda)), Error);
  EXPECT_THROW(swiglu_forward(a.t, c.t, Tensor(host.data(), {3, 8})), Error);  // out on the CPU
  EXPECT_THROW(swiglu_backward(a.t, c.t, c.t, a.t, b.t), Error);
  EXPECT_NO_THROW(swiglu_forward(a.t, c.t, c.t));
  cuda_synchronize();
}


// The shuffled form (BlockShuffle's fc1 read through its last permutation) against the CPU: the
// vector kernels (k in {1, 2, 4, 8}, 8 | H / k; misaligned v takes the scalar one) and the scalar.
std::vector<OpCase> shuffled_cases() {
  std::vector<OpCase> cs;
  for (auto [N, H, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 15, 3}, {33, 15, 5}, {31, 1024, 4},
                         {5, 2816, 2}, {3, 96, 32}, {9, 384, 8}, {6, 40, 1}, {11, 48, 2}})
    for (DType dt : {DType::f32, DType::bf16}) {
      OpCase& c = cs.emplace_back("swiglu_shuffled k=" + std::to_string(k));
      c.in("v", {N, 2 * H}, dt).uniform(-6.0f, 6.0f, 41).offset(N == 11 && dt == DType::bf16 ? 1 : 0);
      c.in("dout", {N, H}, dt).uniform(-1.0f, 1.0f, 42);
      c.out("out", {N, H}, dt);
      c.out("dv", {N, 2 * H}, dt);
      c.out("out2", {N, H}, dt);
      c.run = [k = k](OpArgs& t) {
        swiglu_forward_shuffled(t["v"], k, t["out"]);
        swiglu_backward_shuffled(t["v"], k, t["dout"], t["dv"], t["out2"]);
      };
    }
  return cs;
}

LINGUA_OP_TEST(SwiGLU, ShuffledMatchesCpu, shuffled_cases())

TEST(SwiGLUCuda, ShuffledInPlaceEqualsOutOfPlace) {
  LINGUA_REQUIRE_GPU();
  const int64_t N = 33, H = 1536, k = 4;
  for (DType dt : {DType::f32, DType::bf16}) {
    DeviceTensor v({N, 2 * H}, dt), g({N, H}, dt), dv({N, 2 * H}, dt), out({N, H}, dt);
    v.upload(random_vector(N * 2 * H, 43, -4.0f, 4.0f));
    g.upload(random_vector(N * H, 44));
    swiglu_backward_shuffled(v.t, k, g.t, dv.t, out.t);
    swiglu_backward_shuffled(v.t, k, g.t, v.t, g.t);  // dv over v, the output over dout
    EXPECT_EQ(v.bytes(), dv.bytes()) << dtype_name(dt);
    EXPECT_EQ(g.bytes(), out.bytes()) << dtype_name(dt);
  }
}

}  // namespace
