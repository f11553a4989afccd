// GPU tail scaling against the CPU reference (the op-test harness): odd sizes, every dtype pairing,
// factors 0, between and 1, null factors, in place, periods.
#include <gtest/gtest.h>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/tail_scale/tail_scale.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

std::vector<OpCase> cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 1;
  struct Size {
    int64_t R, C, row_from, col_from, row_period = 0, col_period = 0;
  };
  for (Size s : {Size{1, 1, 0, 0}, Size{3, 7, 2, 5}, Size{33, 1023, 17, 1000}, Size{257, 129, 300, 64},
                 Size{35, 99, 3, 7, 5, 11}, Size{12, 1024, 0, 100, 0, 128}})
    for (auto [a, b] : {std::pair{0.0f, 0.0f}, std::pair{0.37f, 0.81f}, std::pair{1.0f, 0.5f}})
      for (DType dx : {DType::bf16, DType::f32})
        for (DType dy : {DType::bf16, DType::f32})
          for (int mode = 0; mode < 3; ++mode) {  // both factors, rows only (null columns), in place
            if (mode == 2 && dx != dy) continue;
            OpCase& c = cs.emplace_back("tail_scale", "mode " + std::to_string(mode));
            c.in("a", {1}).fill(a);
            c.in("b", {1}).fill(b);
            if (mode != 2) c.in("x", {s.R, s.C}, dx).uniform(-2.0f, 2.0f, seed++).offset(1);
            TensorSpec& y = c.out("y", {s.R, s.C}, dy);
            if (mode == 2) y.accumulated().uniform(-2.0f, 2.0f, seed++);
            c.run = [mode, s](OpArgs& o) {
              const float *pa = (const float*)o["a"].data, *pb = mode == 1 ? nullptr : (const float*)o["b"].data;
              tail_scale(mode == 2 ? o["y"] : o["x"], s.row_from, pa, s.col_from, pb, o["y"], s.row_period,
                         s.col_period);
            };
          }
  return cs;
}

LINGUA_OP_TEST(TailScale, MatchesCpu, cases())

}  // namespace
