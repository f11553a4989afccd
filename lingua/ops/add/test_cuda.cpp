// GPU residual add against the CPU through the op-test harness: one fp32 add per element, so the
// results equal the host's bit for bit.
#include <gtest/gtest.h>

#include "lingua/ops/add/add.h"
#include "lingua/ops/backend_test.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

// Sizes around the 4- and 8-element vectors, and large ones (grid-stride loops).
const int64_t kSizes[] = {1, 3, 4, 7, 8, 9, 15, 17, 1000, 4097, (int64_t(1) << 20) + 3, int64_t(1) << 22};

OpCase add_case(std::vector<int64_t> dst_shape, std::vector<int64_t> src_shape, DType src_dtype, int64_t offset,
                uint32_t seed, float src_range) {
  OpCase c("add_into");
  c.out("dst", dst_shape).accumulated().uniform(-1.0f, 1.0f, seed).offset(offset).exact();
  c.in("src", src_shape, src_dtype).uniform(-src_range, src_range, seed + 1).offset(offset);
  c.run = [](OpArgs& a) { add_into(a["dst"], a["src"]); };
  return c;
}

std::vector<OpCase> f32_cases() {
  std::vector<OpCase> cs;
  for (int64_t n : kSizes)
    for (int64_t offset : {0, 1})  // offset 1: misaligned pointers, the scalar path
      cs.push_back(add_case({n}, {n}, DType::f32, offset, 1, 1.0f));
  return cs;
}

std::vector<OpCase> bf16_cases() {
  std::vector<OpCase> cs;
  for (int64_t n : kSizes)
    for (int64_t offset : {0, 1, 8})  // 8: dst 32 bytes, src 16 bytes in: still vectorised
      cs.push_back(add_case({n}, {n}, DType::bf16, offset, 3, 4.0f));
  return cs;
}

std::vector<OpCase> shape_cases() {
  return {add_case({4, 6}, {2, 3, 4}, DType::f32, 0, 5, 1.0f), add_case({0}, {0, 3}, DType::f32, 0, 5, 1.0f)};
}

LINGUA_OP_TEST(Add, F32MatchesHostExactly, f32_cases())
LINGUA_OP_TEST(Add, Bf16MatchesHostExactly, bf16_cases())
LINGUA_OP_TEST(Add, ShapesMayDifferWithTheSameNumel, shape_cases())

TEST(AddCuda, Errors) {
  LINGUA_REQUIRE_GPU();
  DeviceTensor d({64}, DType::f32), s({64}, DType::f32);
  std::vector<float> host(64);
  EXPECT_THROW(add_into(d.t, s.view({63}, DType::f32)), Error);
  EXPECT_THROW(add_into(d.view({64}, DType::bf16), s.view({64}, DType::bf16)), Error);
  EXPECT_THROW(add_into(d.t, s.view({64}, DType::i32)), Error);
  EXPECT_THROW(add_into(d.t, Tensor(host.data(), {64})), Error);
  EXPECT_THROW(add_into(Tensor(host.data(), {64}), s.t), Error);
}

}  // namespace
