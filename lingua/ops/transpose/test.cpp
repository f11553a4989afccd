// Transpose on the CPU: the definition on odd and degenerate sizes, a round trip, and the errors.
#include <gtest/gtest.h>

#include "lingua/ops/testing.h"
#include "lingua/ops/transpose/transpose.h"

using namespace lingua;
using namespace lingua::test_util;

TEST(Transpose, SwapsRowsAndColumns) {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {1, 7}, {5, 1}, {33, 65}, {70, 31}}) {
    auto x = random_vector(R * C, (uint32_t)(R * 100 + C));
    std::vector<float> y(x.size()), back(x.size());
    transpose(Tensor(x.data(), {R, C}), Tensor(y.data(), {C, R}));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) ASSERT_EQ(y[c * R + r], x[r * C + c]) << R << "x" << C << " at " << r << "," << c;
    transpose(Tensor(y.data(), {C, R}), Tensor(back.data(), {R, C}));
    EXPECT_EQ(back, x);
  }
}

TEST(Transpose, EmptyMatrixIsANoOp) {
  std::vector<float> x(1), y(1, 5.0f);
  transpose(Tensor(x.data(), {0, 3}), Tensor(y.data(), {3, 0}));
  EXPECT_EQ(y[0], 5.0f);
}

TEST(Transpose, RejectsWrongShapesAndInPlace) {
  std::vector<float> x(12), y(12);
  EXPECT_THROW(transpose(Tensor(x.data(), {3, 4}), Tensor(y.data(), {3, 4})), Error);
  EXPECT_THROW(transpose(Tensor(x.data(), {3, 4}), Tensor(x.data(), {4, 3})), Error);
  EXPECT_THROW(transpose(Tensor(x.data(), {12}), Tensor(y.data(), {12})), Error);
}
