// Stride permutation on the CPU: the definition on a small example, the inverse, the residual.
#include <gtest/gtest.h>

#include "lingua/ops/stride_permute/stride_permute.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

TEST(StridePermute, GathersEveryKthElementIntoBlocks) {
  // One row of width 6 with k = 2: [m = 3, k = 2] -> [k, m]: block 0 = x0 x2 x4, block 1 = x1 x3 x5.
  std::vector<float> x = {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}, y(12);
  stride_permute(Tensor(x.data(), {2, 6}), 2, Tensor(y.data(), {2, 6}));
  EXPECT_EQ(y, (std::vector<float>{0, 2, 4, 1, 3, 5, 10, 12, 14, 11, 13, 15}));
  // k = 3: blocks (x0 x3) (x1 x4) (x2 x5).
  stride_permute(Tensor(x.data(), {2, 6}), 3, Tensor(y.data(), {2, 6}));
  EXPECT_EQ(y, (std::vector<float>{0, 3, 1, 4, 2, 5, 10, 13, 11, 14, 12, 15}));
}

TEST(StridePermute, SwappingKAndMInverts) {
  for (int64_t k : {1, 2, 3, 4, 12}) {
    const int64_t N = 5, W = 12;
    auto x = random_vector(N * W, 1);
    std::vector<float> y(x.size()), back(x.size());
    stride_permute(Tensor(x.data(), {N, W}), k, Tensor(y.data(), {N, W}));
    stride_permute(Tensor(y.data(), {N, W}), W / k, Tensor(back.data(), {N, W}));
    EXPECT_EQ(back, x) << k;
  }
}

TEST(StridePermute, AddsTheResidualInPlaceOrNot) {
  const int64_t N = 3, W = 10, k = 5;
  auto x = random_vector(N * W, 2), r = random_vector(N * W, 3);
  std::vector<float> p(x.size()), y(x.size()), inplace = r;
  stride_permute(Tensor(x.data(), {N, W}), k, Tensor(p.data(), {N, W}));
  stride_permute(Tensor(x.data(), {N, W}), k, Tensor(y.data(), {N, W}), Tensor(r.data(), {N, W}));
  stride_permute(Tensor(x.data(), {N, W}), k, Tensor(inplace.data(), {N, W}), Tensor(inplace.data(), {N, W}));
  for (size_t e = 0; e < x.size(); ++e) {
    EXPECT_EQ(y[e], r[e] + p[e]);
    EXPECT_EQ(inplace[e], y[e]);
  }
}

TEST(StridePermute, RejectsABlockCountThatDoesNotDivideTheRow) {
  std::vector<float> x(10), y(10);
  EXPECT_THROW(stride_permute(Tensor(x.data(), {1, 10}), 3, Tensor(y.data(), {1, 10})), std::exception);
  EXPECT_THROW(stride_permute(Tensor(x.data(), {1, 10}), 0, Tensor(y.data(), {1, 10})), std::exception);
}
