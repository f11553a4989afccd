#include <gtest/gtest.h>

#include "lingua/ops/add/add.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

TEST(Add, AddsElementwiseOverFlattenedShapes) {
  for (int64_t n : {1, 3, 8, 33, 1000, 70001}) {
    auto dst = random_vector(n, 1);
    auto src = random_vector(n, 2);
    auto expected = dst;
    for (int64_t i = 0; i < n; ++i) expected[i] += src[i];
    add_into(Tensor(dst.data(), {n}), Tensor(src.data(), {1, n}));
    EXPECT_EQ(dst, expected) << n;
  }
  // [4, 6] += [24]
  auto dst = random_vector(24, 3);
  auto src = random_vector(24, 4);
  auto expected = dst;
  for (int i = 0; i < 24; ++i) expected[i] += src[i];
  add_into(Tensor(dst.data(), {4, 6}), Tensor(src.data(), {24}));
  EXPECT_EQ(dst, expected);
  // empty
  add_into(Tensor(dst.data(), {0, 6}), Tensor(src.data(), {0}));
}

TEST(Add, Errors) {
  auto dst = random_vector(12, 5);
  auto src = random_vector(12, 6);
  EXPECT_THROW(add_into(Tensor(dst.data(), {12}), Tensor(src.data(), {11})), Error);
  EXPECT_THROW(add_into(Tensor(dst.data(), {12}), Tensor(src.data(), {12}, DType::bf16)), Error);
  EXPECT_THROW(add_into(Tensor(dst.data(), {12}, DType::bf16), Tensor(src.data(), {12})), Error);
  EXPECT_THROW(add_into(Tensor(dst.data(), {12}), Tensor(src.data(), {12}, DType::f32, Device::cuda)), Error);
  try {
    add_into(Tensor(dst.data(), {3, 4}), Tensor(src.data(), {13}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add_into"), std::string::npos) << e.what();
  }
}

}  // namespace
