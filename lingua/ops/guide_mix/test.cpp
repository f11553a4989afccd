// Guide mixing on the CPU: the definition, the in-place forms, and the backward as the transpose
// of the forward (finite differences are exact for a linear map).
#include <gtest/gtest.h>

#include "lingua/ops/guide_mix/guide_mix.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

TEST(GuideMix, WeighsTheGuideByAlphaAndAddsTheResidual) {
  const int64_t N = 3, W = 7;
  auto s = random_vector(N * W, 1), w = random_vector(N * W, 2), r = random_vector(N * W, 3);
  std::vector<float> y(s.size()), yr(s.size());
  const float alpha = 0.3f;
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &alpha, Tensor(y.data(), {N, W}));
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &alpha, Tensor(yr.data(), {N, W}),
                    Tensor(r.data(), {N, W}));
  for (size_t i = 0; i < s.size(); ++i) {
    EXPECT_FLOAT_EQ(y[i], 0.3f * w[i] + 0.7f * s[i]);
    EXPECT_FLOAT_EQ(yr[i], r[i] + y[i]);
  }
  // alpha 1: the guide alone; alpha 0: the structured output alone (bitwise).
  const float one = 1.0f, zero = 0.0f;
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &one, Tensor(y.data(), {N, W}));
  EXPECT_EQ(y, w);
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &zero, Tensor(y.data(), {N, W}));
  EXPECT_EQ(y, s);
}

TEST(GuideMix, InPlaceEqualsOutOfPlace) {
  const int64_t N = 4, W = 5;
  auto s = random_vector(N * W, 4), w = random_vector(N * W, 5), r = random_vector(N * W, 6);
  const float alpha = 0.61f;
  std::vector<float> y(s.size()), in_s = s, in_r = r;
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &alpha, Tensor(y.data(), {N, W}),
                    Tensor(r.data(), {N, W}));
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &alpha, Tensor(in_r.data(), {N, W}),
                    Tensor(in_r.data(), {N, W}));
  EXPECT_EQ(in_r, y);
  std::vector<float> y2(s.size());
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &alpha, Tensor(y2.data(), {N, W}));
  guide_mix_forward(Tensor(in_s.data(), {N, W}), Tensor(w.data(), {N, W}), &alpha, Tensor(in_s.data(), {N, W}));
  EXPECT_EQ(in_s, y2);
}

TEST(GuideMix, BackwardIsTheForwardsTranspose) {
  // <dy, mix(s, w)> = <ds, s> + <dw, w> for the linear map (s, w) -> mix(s, w).
  const int64_t N = 5, W = 9;
  auto s = random_vector(N * W, 7), w = random_vector(N * W, 8), dy = random_vector(N * W, 9);
  const float alpha = 0.27f;
  std::vector<float> y(s.size()), ds(s.size()), dw(s.size());
  guide_mix_forward(Tensor(s.data(), {N, W}), Tensor(w.data(), {N, W}), &alpha, Tensor(y.data(), {N, W}));
  guide_mix_backward(Tensor(dy.data(), {N, W}), &alpha, Tensor(ds.data(), {N, W}), Tensor(dw.data(), {N, W}));
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    lhs += (double)dy[i] * y[i];
    rhs += (double)ds[i] * s[i] + (double)dw[i] * w[i];
  }
  EXPECT_NEAR(lhs, rhs, 1e-5 * std::abs(lhs) + 1e-6);
  // dy in place as ds.
  std::vector<float> g = dy, dw2(s.size());
  guide_mix_backward(Tensor(g.data(), {N, W}), &alpha, Tensor(g.data(), {N, W}), Tensor(dw2.data(), {N, W}));
  EXPECT_EQ(g, ds);
  EXPECT_EQ(dw2, dw);
}

TEST(GuideMix, RejectsMismatchedShapesAndAliasedGradients) {
  std::vector<float> a(12), b(10), c(12);
  const float alpha = 0.5f;
  EXPECT_THROW(guide_mix_forward(Tensor(a.data(), {3, 4}), Tensor(b.data(), {2, 5}), &alpha, Tensor(c.data(), {3, 4})),
               Error);
  EXPECT_THROW(guide_mix_backward(Tensor(a.data(), {3, 4}), &alpha, Tensor(c.data(), {3, 4}), Tensor(c.data(), {3, 4})),
               Error);
  EXPECT_THROW(guide_mix_forward(Tensor(a.data(), {3, 4}), Tensor(a.data(), {3, 4}), nullptr, Tensor(c.data(), {3, 4})),
               Error);
}
