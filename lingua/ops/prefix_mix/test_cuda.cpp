// GPU module-token rows against the CPU reference (the op-test harness): odd sizes, rows in the
// middle of the sequence, every aggregation weight pair, dx_act in bf16, f32, dx itself or none,
// with and without the parameter gradient.
#include <gtest/gtest.h>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/prefix_mix/prefix_mix.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Shape {
  int64_t B, S, M, row0, D;
};
const Shape kShapes[] = {{1, 1, 1, 0, 1}, {3, 9, 4, 0, 7}, {2, 33, 5, 3, 129}, {5, 20, 16, 0, 1023}};
const std::pair<float, float> kWeights[] = {{0.0f, 1.0f}, {1.0f, 1.0f}, {0.5f, 0.5f}, {0.8f, 0.2f}, {1.0f, 0.0f}};

std::vector<OpCase> forward_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 1;
  for (const Shape& s : kShapes)
    for (auto [a, b] : kWeights) {
      OpCase& c = cs.emplace_back("prefix_mix_forward", "a " + std::to_string(a) + " b " + std::to_string(b));
      c.in("p", {s.M, s.D}).uniform(-1.0f, 1.0f, seed++).offset(1);
      c.out("x", {s.B * s.S, s.D}).accumulated().uniform(-2.0f, 2.0f, seed++);
      c.run = [s, a = a, b = b](OpArgs& t) { prefix_mix_forward(t["x"], t["p"], s.S, s.row0, a, b); };
    }
  return cs;
}

std::vector<OpCase> backward_cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 100;
  for (const Shape& s : kShapes)
    for (auto [a, b] : kWeights)
      for (int act = 0; act < 4; ++act)  // none, bf16, f32, dx itself
        for (int grad = 0; grad < 2; ++grad) {
          OpCase& c = cs.emplace_back("prefix_mix_backward", "act " + std::to_string(act) + " grad " +
                                                                 std::to_string(grad));
          c.out("dx", {s.B * s.S, s.D}).accumulated().uniform(-2.0f, 2.0f, seed++);
          if (act == 1 || act == 2)
            c.out("dx_act", {s.B * s.S, s.D}, act == 1 ? DType::bf16 : DType::f32).accumulated().uniform(-1, 1, seed++);
          if (grad) c.out("dp", {s.M, s.D}).accumulated().uniform(-1.0f, 1.0f, seed++);
          c.run = [s, a = a, b = b, act, grad](OpArgs& t) {
            const Tensor act_t = act == 0 ? Tensor() : act == 3 ? t["dx"] : t["dx_act"];
            prefix_mix_backward(t["dx"], act_t, grad ? t["dp"] : Tensor(), s.S, s.row0, s.M, a, b);
          };
        }
  return cs;
}

LINGUA_OP_TEST(PrefixMix, ForwardMatchesCpu, forward_cases())
LINGUA_OP_TEST(PrefixMix, BackwardMatchesCpu, backward_cases())

}  // namespace
