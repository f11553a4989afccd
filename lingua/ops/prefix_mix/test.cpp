// Module-token rows on the CPU: the definition (only rows [row0, row0 + M) of each sequence
// change), a = 0 ignores what the rows held (even NaN), and the backward is the transpose of the
// forward (the map (x, p) -> x' is linear, so finite differences are exact: <dy, x'> = <dx, x> +
// <dp, p>), with dx_act following dx.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/ops/prefix_mix/prefix_mix.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

TEST(PrefixMix, SetsOnlyTheModuleRowsOfEachSequence) {
  const int64_t B = 3, S = 7, D = 5, M = 2, row0 = 3;
  auto x = random_vector(B * S * D, 1), p = random_vector(M * D, 2);
  std::vector<float> y = x;
  const float a = 0.25f, b = 0.75f;
  prefix_mix_forward(Tensor(y.data(), {B * S, D}), Tensor(p.data(), {M, D}), S, row0, a, b);
  for (int64_t s = 0; s < B; ++s)
    for (int64_t r = 0; r < S; ++r)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t at = (s * S + r) * D + d;
        if (r >= row0 && r < row0 + M) EXPECT_FLOAT_EQ(y[at], a * x[at] + b * p[(r - row0) * D + d]);
        else EXPECT_EQ(y[at], x[at]);
      }
}

TEST(PrefixMix, ZeroWeightOfTheStreamTakesTheParametersExactly) {
  const int64_t B = 2, S = 4, D = 3, M = 4;
  std::vector<float> x(B * S * D, std::nanf("")), p = random_vector(M * D, 3);
  prefix_mix_forward(Tensor(x.data(), {B * S, D}), Tensor(p.data(), {M, D}), S, 0, 0.0f, 1.0f);
  for (int64_t s = 0; s < B; ++s)
    for (int64_t i = 0; i < M * D; ++i) EXPECT_EQ(x[s * S * D + i], p[i]);
  std::vector<float> dx(B * S * D, std::nanf("")), dp(M * D, 0.0f);
  for (size_t i = 0; i < dx.size(); i += 2) dx[i] = 1.0f;  // (a = 0: the rows' gradient is 0, even from NaN)
  prefix_mix_backward(Tensor(dx.data(), {B * S, D}), Tensor(), Tensor(), S, 0, M, 0.0f, 1.0f);
  for (float v : dx) EXPECT_EQ(v, 0.0f);
}

TEST(PrefixMix, BackwardIsTheForwardsTranspose) {
  for (auto [a, b] : {std::pair<float, float>{0.0f, 1.0f}, {1.0f, 1.0f}, {0.5f, 0.5f}, {0.75f, 0.25f}, {1.0f, 0.0f}}) {
    const int64_t B = 3, S = 9, D = 7, M = 3, row0 = 2;
    auto x = random_vector(B * S * D, 4), p = random_vector(M * D, 5), dy = random_vector(B * S * D, 6);
    auto dp0 = random_vector(M * D, 7);
    std::vector<float> y = x, dx = dy, dx_act(dy.size(), -7.0f), dp = dp0;
    prefix_mix_forward(Tensor(y.data(), {B * S, D}), Tensor(p.data(), {M, D}), S, row0, a, b);
    prefix_mix_backward(Tensor(dx.data(), {B * S, D}), Tensor(dx_act.data(), {B * S, D}), Tensor(dp.data(), {M, D}), S,
                        row0, M, a, b);
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < y.size(); ++i) lhs += (double)dy[i] * y[i], rhs += (double)dx[i] * x[i];
    for (size_t i = 0; i < p.size(); ++i) rhs += (double)(dp[i] - dp0[i]) * p[i];
    EXPECT_NEAR(lhs, rhs, 1e-4 * (std::abs(lhs) + 1)) << "a " << a << " b " << b;
    // dx_act: the module rows follow dx, the others are left alone.
    for (int64_t s = 0; s < B; ++s)
      for (int64_t r = 0; r < S; ++r)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t at = (s * S + r) * D + d;
          EXPECT_EQ(dx_act[at], r >= row0 && r < row0 + M ? dx[at] : -7.0f);
        }
  }
}

TEST(PrefixMix, RejectsRowsOutsideTheSequence) {
  std::vector<float> x(2 * 5 * 3), p(4 * 3);
  EXPECT_THROW(prefix_mix_forward(Tensor(x.data(), {10, 3}), Tensor(p.data(), {4, 3}), 5, 2, 1, 1), Error);
  EXPECT_THROW(prefix_mix_forward(Tensor(x.data(), {10, 3}), Tensor(p.data(), {4, 3}), 3, 0, 1, 1), Error);
}
