#include <gtest/gtest.h>

#include <cmath>

#include "lingua/ops/stride_permute/stride_permute.h"
#include "lingua/ops/swiglu/swiglu.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, H;
};

TEST(SwiGLU, ForwardMatchesDoubleReference) {
  for (Case c : {Case{1, 1}, Case{3, 7}, Case{33, 31}, Case{257, 301}}) {
    auto a = random_vector(c.N * c.H, 1, -6.0f, 6.0f);
    auto b = random_vector(c.N * c.H, 2, -2.0f, 2.0f);
    std::vector<float> out(a.size());
    swiglu_forward(Tensor(a.data(), {c.N, c.H}), Tensor(b.data(), {c.N, c.H}), Tensor(out.data(), {c.N, c.H}));
    std::vector<double> ref(a.size());
    for (size_t i = 0; i < a.size(); ++i) ref[i] = a[i] / (1.0 + std::exp(-(double)a[i])) * b[i];
    EXPECT_TRUE(close(out, ref, 1e-6, "out")) << c.N << "x" << c.H;
  }
}

TEST(SwiGLU, ExtremeInputsStayFinite) {
  std::vector<float> a = {-200.0f, -90.0f, 90.0f, 200.0f, 0.0f}, b(5, 1.5f), out(5), dout(5, 1.0f), da(5), db(5);
  swiglu_forward(Tensor(a.data(), {1, 5}), Tensor(b.data(), {1, 5}), Tensor(out.data(), {1, 5}));
  swiglu_backward(Tensor(a.data(), {1, 5}), Tensor(b.data(), {1, 5}), Tensor(dout.data(), {1, 5}),
                  Tensor(da.data(), {1, 5}), Tensor(db.data(), {1, 5}));
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(std::isfinite(out[i]) && std::isfinite(da[i]) && std::isfinite(db[i])) << i;
  }
  EXPECT_NEAR(out[3], 300.0f, 1e-3);
  EXPECT_NEAR(da[3], 1.5f, 1e-6);
  EXPECT_NEAR(out[0], 0.0f, 1e-6);
  EXPECT_NEAR(da[4], 0.75f, 1e-6);  // silu'(0) = 1/2
}

TEST(SwiGLU, BackwardMatchesFiniteDifferences) {
  for (Case c : {Case{1, 1}, Case{3, 7}, Case{9, 31}}) {
    auto a = random_vector(c.N * c.H, 3, -4.0f, 4.0f);
    auto b = random_vector(c.N * c.H, 4, -2.0f, 2.0f);
    auto R = random_vector(c.N * c.H, 5);
    std::vector<float> out(a.size());
    auto loss = [&] {
      swiglu_forward(Tensor(a.data(), {c.N, c.H}), Tensor(b.data(), {c.N, c.H}), Tensor(out.data(), {c.N, c.H}));
      return dot(out, R);
    };
    auto num_da = numeric_gradient(a, loss);
    auto num_db = numeric_gradient(b, loss);
    std::vector<float> da(a.size(), 5.0f), db(a.size(), 5.0f);
    swiglu_backward(Tensor(a.data(), {c.N, c.H}), Tensor(b.data(), {c.N, c.H}), Tensor(R.data(), {c.N, c.H}),
                    Tensor(da.data(), {c.N, c.H}), Tensor(db.data(), {c.N, c.H}));
    EXPECT_TRUE(close(da, num_da, 1e-3, "da")) << c.N << "x" << c.H;
    EXPECT_TRUE(close(db, num_db, 1e-3, "db")) << c.N << "x" << c.H;
  }
}

TEST(SwiGLU, BackwardRecomputesTheOutputInPlace) {
  // The FFN's form: da over a, db over b, the recomputed output over dout.
  const int64_t N = 5, H = 7;
  auto a = random_vector(N * H, 11, -4.0f, 4.0f), b = random_vector(N * H, 12), g = random_vector(N * H, 13);
  std::vector<float> out(N * H), da(N * H), db(N * H);
  swiglu_forward(Tensor(a.data(), {N, H}), Tensor(b.data(), {N, H}), Tensor(out.data(), {N, H}));
  swiglu_backward(Tensor(a.data(), {N, H}), Tensor(b.data(), {N, H}), Tensor(g.data(), {N, H}),
                  Tensor(da.data(), {N, H}), Tensor(db.data(), {N, H}));
  swiglu_backward(Tensor(a.data(), {N, H}), Tensor(b.data(), {N, H}), Tensor(g.data(), {N, H}),
                  Tensor(a.data(), {N, H}), Tensor(b.data(), {N, H}), Tensor(g.data(), {N, H}));
  EXPECT_EQ(a, da);
  EXPECT_EQ(b, db);
  EXPECT_EQ(g, out);
}

TEST(SwiGLU, PackedEqualsSeparate) {
  for (int64_t H : {1, 7, 64}) {
    const int64_t N = 5;
    auto a = random_vector(N * H, 21, -4.0f, 4.0f), b = random_vector(N * H, 22), g = random_vector(N * H, 23);
    std::vector<float> ab(N * 2 * H);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < H; ++j) ab[n * 2 * H + j] = a[n * H + j], ab[n * 2 * H + H + j] = b[n * H + j];
    std::vector<float> out(N * H), da(N * H), db(N * H), pout(N * H), gp = g;
    swiglu_forward(Tensor(a.data(), {N, H}), Tensor(b.data(), {N, H}), Tensor(out.data(), {N, H}));
    swiglu_forward_packed(Tensor(ab.data(), {N, 2 * H}), Tensor(pout.data(), {N, H}));
    EXPECT_EQ(pout, out);
    swiglu_backward(Tensor(a.data(), {N, H}), Tensor(b.data(), {N, H}), Tensor(g.data(), {N, H}),
                    Tensor(da.data(), {N, H}), Tensor(db.data(), {N, H}));
    // In place, as the FFN calls it: dab over ab, the recomputed output over dout.
    swiglu_backward_packed(Tensor(ab.data(), {N, 2 * H}), Tensor(gp.data(), {N, H}), Tensor(ab.data(), {N, 2 * H}),
                           Tensor(gp.data(), {N, H}));
    EXPECT_EQ(gp, out);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < H; ++j) {
        ASSERT_EQ(ab[n * 2 * H + j], da[n * H + j]);
        ASSERT_EQ(ab[n * 2 * H + H + j], db[n * H + j]);
      }
  }
  std::vector<float> odd(3 * 5), o(3 * 2);
  EXPECT_THROW(swiglu_forward_packed(Tensor(odd.data(), {3, 5}), Tensor(o.data(), {3, 2})), Error);
}

TEST(SwiGLU, ShuffledEqualsPermutationThenPacked) {
  // The shuffled form against its definition: ab = stride_permute(v, 2H / k), the packed op, and
  // the gradient permuted back (the inverse: stride_permute by k).
  for (auto [H, k] : {std::pair<int64_t, int64_t>{1, 1}, {15, 3}, {15, 5}, {24, 4}, {7, 7}}) {
    const int64_t N = 5;
    auto v = random_vector(N * 2 * H, 31, -4.0f, 4.0f), g = random_vector(N * H, 32);
    std::vector<float> ab(v.size()), out(N * H), dab(v.size()), dv_ref(v.size()), gp = g;
    stride_permute(Tensor(v.data(), {N, 2 * H}), 2 * H / k, Tensor(ab.data(), {N, 2 * H}));
    swiglu_forward_packed(Tensor(ab.data(), {N, 2 * H}), Tensor(out.data(), {N, H}));
    swiglu_backward_packed(Tensor(ab.data(), {N, 2 * H}), Tensor(g.data(), {N, H}), Tensor(dab.data(), {N, 2 * H}));
    stride_permute(Tensor(dab.data(), {N, 2 * H}), k, Tensor(dv_ref.data(), {N, 2 * H}));
    std::vector<float> sout(N * H);
    swiglu_forward_shuffled(Tensor(v.data(), {N, 2 * H}), k, Tensor(sout.data(), {N, H}));
    EXPECT_EQ(sout, out) << H << " " << k;
    // In place, as the FFN calls it: dv over v, the recomputed output over dout.
    swiglu_backward_shuffled(Tensor(v.data(), {N, 2 * H}), k, Tensor(gp.data(), {N, H}), Tensor(v.data(), {N, 2 * H}),
                             Tensor(gp.data(), {N, H}));
    EXPECT_EQ(v, dv_ref) << H << " " << k;
    EXPECT_EQ(gp, out) << H << " " << k;
  }
  std::vector<float> v(3 * 10), o(3 * 5);
  EXPECT_THROW(swiglu_forward_shuffled(Tensor(v.data(), {3, 10}), 2, Tensor(o.data(), {3, 5})), Error);  // 2 !| 5
}

TEST(SwiGLU, ShapeErrors) {
  auto a = random_vector(3 * 7, 6);
  std::vector<float> out(3 * 7);
  EXPECT_THROW(swiglu_forward(Tensor(a.data(), {3, 7}), Tensor(a.data(), {7, 3}), Tensor(out.data(), {3, 7})), Error);
  EXPECT_THROW(swiglu_forward(Tensor(a.data(), {3, 7}), Tensor(a.data(), {3, 7}), Tensor(out.data(), {21})), Error);
  EXPECT_THROW(swiglu_backward(Tensor(a.data(), {3, 7}), Tensor(a.data(), {3, 7}), Tensor(a.data(), {3, 7}),
                               Tensor(out.data(), {3, 7}), Tensor(out.data(), {3, 6})),
               Error);
  EXPECT_THROW(swiglu_forward(Tensor(a.data(), {3, 7}), Tensor(a.data(), {3, 7}, DType::f32, Device::cuda),
                              Tensor(out.data(), {3, 7})),
               Error);
}

}  // namespace
