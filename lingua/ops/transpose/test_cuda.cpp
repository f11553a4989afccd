// GPU transpose against the CPU reference (the op-test harness): odd sizes that leave partial
// tiles, every dtype pair, misaligned tensors. A transpose only moves values: bitwise equal to the
// reference rounded to y's dtype.
#include <gtest/gtest.h>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/transpose/transpose.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

std::vector<OpCase> cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 1;
  for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {1, 33}, {31, 1}, {33, 65}, {257, 1023}, {2049, 95}})
    for (DType dx : {DType::bf16, DType::f32})
      for (DType dy : {DType::bf16, DType::f32}) {
        OpCase& c = cs.emplace_back("transpose", std::to_string(R) + "x" + std::to_string(C));
        c.in("x", {R, C}, dx).uniform(-3.0f, 3.0f, seed++).offset(1);
        c.out("y", {C, R}, dy).exact();
        c.run = [](OpArgs& a) { transpose(a["x"], a["y"]); };
      }
  return cs;
}

LINGUA_OP_TEST(Transpose, MatchesCpu, cases())

}  // namespace
