#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/core/bf16.h"
#include "lingua/ops/cast/cast.h"

using namespace lingua;

TEST(Cast, RoundsToNearestEvenAndBack) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  // 1 + 2^-8 is exactly half way between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3F82);  // 1 + 3*2^-8: tie, rounds up to even
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  std::mt19937 g(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(37);
  for (auto& v : x) v = nd(g);
  std::vector<uint16_t> h(37);
  std::vector<float> back(37);
  cast_into(Tensor(h.data(), {37}, DType::bf16), Tensor(x.data(), {37}));
  cast_into(Tensor(back.data(), {37}), Tensor(h.data(), {37}, DType::bf16));
  for (int i = 0; i < 37; ++i) {
    EXPECT_EQ(h[i], float_to_bf16(x[i]));
    EXPECT_NEAR(back[i], x[i], std::fabs(x[i]) * (1.0f / 256));
  }
  std::vector<float> y(37);
  cast_into(Tensor(y.data(), {37}), Tensor(x.data(), {37}));
  EXPECT_EQ(y, x);
  EXPECT_THROW(cast_into(Tensor(y.data(), {36}), Tensor(x.data(), {37})), Error);
}
