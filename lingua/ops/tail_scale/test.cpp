// Tail scaling on the CPU: the definition element by element, in place, null factors, and the
// backward as the forward's transpose.
#include <gtest/gtest.h>

#include "lingua/ops/tail_scale/tail_scale.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

TEST(TailScale, ScalesTheTrailingRowsAndColumns) {
  const int64_t R = 5, C = 7;
  const auto x = random_vector(R * C, 1);
  std::vector<float> y(x.size());
  const float a = 0.25f, b = -1.5f;
  tail_scale(Tensor((void*)x.data(), {R, C}), 3, &a, 4, &b, Tensor(y.data(), {R, C}));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float f = (r >= 3 ? a : 1.0f) * (c >= 4 ? b : 1.0f);
      EXPECT_FLOAT_EQ(y[r * C + c], x[r * C + c] * f) << r << " " << c;
    }
  // Rows only (no column factor), columns only, nothing (a copy).
  tail_scale(Tensor((void*)x.data(), {R, C}), 1, &a, 0, nullptr, Tensor(y.data(), {R, C}));
  for (int64_t i = 0; i < R * C; ++i) EXPECT_FLOAT_EQ(y[i], x[i] * (i >= C ? a : 1.0f));
  tail_scale(Tensor((void*)x.data(), {R, C}), R, &a, 6, &b, Tensor(y.data(), {R, C}));
  for (int64_t i = 0; i < R * C; ++i) EXPECT_FLOAT_EQ(y[i], x[i] * (i % C == 6 ? b : 1.0f));
  tail_scale(Tensor((void*)x.data(), {R, C}), 0, nullptr, 0, nullptr, Tensor(y.data(), {R, C}));
  EXPECT_EQ(y, x);
}

// With periods: the tail of every group of rows and of columns.
TEST(TailScale, PeriodsScaleTheTailOfEveryGroup) {
  const int64_t R = 6, C = 10;
  const auto x = random_vector(R * C, 4);
  std::vector<float> y(x.size());
  const float a = 0.4f, b = -0.7f;
  tail_scale(Tensor((void*)x.data(), {R, C}), 2, &a, 3, &b, Tensor(y.data(), {R, C}), 3, 5);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float f = (r % 3 >= 2 ? a : 1.0f) * (c % 5 >= 3 ? b : 1.0f);
      EXPECT_FLOAT_EQ(y[r * C + c], x[r * C + c] * f) << r << " " << c;
    }
  EXPECT_THROW(tail_scale(Tensor((void*)x.data(), {R, C}), 0, &a, 0, &b, Tensor(y.data(), {R, C}), 4, 0), Error);
}

TEST(TailScale, InPlaceEqualsOutOfPlaceAndIsSelfAdjoint) {
  const int64_t R = 6, C = 9;
  const auto x = random_vector(R * C, 2), dy = random_vector(R * C, 3);
  const float a = 0.6f, b = 0.3f;
  std::vector<float> y(x.size()), in = x, dx(x.size());
  tail_scale(Tensor((void*)x.data(), {R, C}), 2, &a, 5, &b, Tensor(y.data(), {R, C}));
  tail_scale(Tensor(in.data(), {R, C}), 2, &a, 5, &b, Tensor(in.data(), {R, C}));
  EXPECT_EQ(in, y);
  // <dy, S x> = <S dy, x>: the backward is the same map.
  tail_scale(Tensor((void*)dy.data(), {R, C}), 2, &a, 5, &b, Tensor(dx.data(), {R, C}));
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < x.size(); ++i) lhs += (double)dy[i] * y[i], rhs += (double)dx[i] * x[i];
  EXPECT_NEAR(lhs, rhs, 1e-6 * std::abs(lhs) + 1e-7);
}

TEST(TailScale, BadArgumentsAreNamed) {
  std::vector<float> x(12), y(10);
  const float a = 1;
  EXPECT_THROW(tail_scale(Tensor(x.data(), {3, 4}), 0, &a, 0, &a, Tensor(y.data(), {2, 5})), Error);
  try {
    tail_scale(Tensor(x.data(), {3, 4}), -1, &a, 0, &a, Tensor(x.data(), {3, 4}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row_from"), std::string::npos) << e.what();
  }
}
