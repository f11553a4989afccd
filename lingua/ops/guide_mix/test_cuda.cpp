// GPU guide mixing against the CPU reference (the op-test harness): odd sizes, dtypes, alpha at
// 0, 1 and between, in place on s, on the residual and on dy.
#include <gtest/gtest.h>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/guide_mix/guide_mix.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

std::vector<OpCase> forward_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 1;
  for (auto [N, W] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {33, 1023}, {257, 4097}})
    for (float alpha : {0.0f, 0.37f, 1.0f})
      for (DType ds : {DType::bf16, DType::f32})
        for (DType dy : {DType::bf16, DType::f32})
          for (int mode = 0; mode < 4; ++mode) {  // plain, residual, residual in place, y is s
            if (mode == 3 && ds != dy) continue;
            OpCase& c = cs.emplace_back("guide_mix_forward", "alpha " + std::to_string(alpha) + " mode " +
                                                                 std::to_string(mode));
            c.in("alpha", {1}).fill(alpha);
            if (mode != 3) c.in("s", {N, W}, ds).uniform(-2.0f, 2.0f, seed++).offset(1);
            c.in("w", {N, W}, ds).uniform(-2.0f, 2.0f, seed++);
            if (mode == 1) c.in("r", {N, W}, dy).uniform(-4.0f, 4.0f, seed++);
            TensorSpec& y = c.out("y", {N, W}, dy);
            if (mode >= 2) y.accumulated().uniform(-4.0f, 4.0f, seed++);
            c.run = [mode](OpArgs& a) {
              const float* al = (const float*)a["alpha"].data;
              if (mode == 3) return guide_mix_forward(a["y"], a["w"], al, a["y"]);
              guide_mix_forward(a["s"], a["w"], al, a["y"], mode == 1 ? a["r"] : mode == 2 ? a["y"] : Tensor());
            };
          }
  return cs;
}

std::vector<OpCase> backward_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 100;
  for (auto [N, W] : {std::pair<int64_t, int64_t>{1, 1}, {5, 9}, {31, 2049}})
    for (float alpha : {0.0f, 0.81f})
      for (DType dt : {DType::bf16, DType::f32})
        for (int in_place = 0; in_place < 2; ++in_place) {
          OpCase& c = cs.emplace_back("guide_mix_backward", in_place ? "ds is dy" : "");
          c.in("alpha", {1}).fill(alpha);
          if (!in_place) c.in("dy", {N, W}, dt).uniform(-2.0f, 2.0f, seed++).offset(1);
          TensorSpec& ds = c.out("ds", {N, W}, dt);
          if (in_place) ds.accumulated().uniform(-2.0f, 2.0f, seed++);
          c.out("dw", {N, W}, dt);
          c.run = [in_place](OpArgs& a) {
            guide_mix_backward(in_place ? a["ds"] : a["dy"], (const float*)a["alpha"].data, a["ds"], a["dw"]);
          };
        }
  return cs;
}

LINGUA_OP_TEST(GuideMix, ForwardMatchesCpu, forward_cases())
LINGUA_OP_TEST(GuideMix, BackwardMatchesCpu, backward_cases())

}  // namespace
