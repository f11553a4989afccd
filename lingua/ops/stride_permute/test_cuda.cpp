// GPU stride permutation against the CPU reference (the op-test harness): odd widths, block
// counts, dtypes, residual separate or in place; the vector kernel (a side of 1-16 that the other's
// multiple of 8 transposes: k small, m small, k = m) and, for misaligned x, the scalar one. A permutation of bf16 values into bf16 is exact.
#include <gtest/gtest.h>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/stride_permute/stride_permute.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

std::vector<OpCase> cases() {
  std::vector<OpCase> cs;
  uint32_t seed = 1;
  struct Shape {
    int64_t N, W, k;
  };
  for (Shape s : {Shape{1, 1, 1}, Shape{3, 6, 2}, Shape{31, 15, 5}, Shape{33, 1023, 3}, Shape{257, 4096, 4},
                  Shape{7, 6144, 8}, Shape{5, 6144, 1536}, Shape{3, 4096, 4096}, Shape{9, 6144, 16},
                  Shape{5, 4096, 512}, Shape{3, 64, 8}, Shape{4, 96, 2}})
    for (DType dx : {DType::bf16, DType::f32})
      for (DType dy : {DType::bf16, DType::f32})
        for (int residual = 0; residual < 3; ++residual) {  // none, separate, in place
          OpCase& c = cs.emplace_back("stride_permute", residual == 0 ? "" : residual == 1 ? "residual" : "in place");
          c.in("x", {s.N, s.W}, dx).uniform(-2.0f, 2.0f, seed++).offset(residual == 1 ? 1 : 0);
          if (residual == 1) c.in("r", {s.N, s.W}, dy).uniform(-4.0f, 4.0f, seed++);
          TensorSpec& y = c.out("y", {s.N, s.W}, dy);
          if (residual == 2) y.accumulated().uniform(-4.0f, 4.0f, seed++);
          if (residual == 0 && dy == dx) y.tol(exact_tol());
          const int64_t k = s.k;
          c.run = [k, residual](OpArgs& a) {
            stride_permute(a["x"], k, a["y"], residual == 0 ? Tensor() : residual == 1 ? a["r"] : a["y"]);
          };
        }
  return cs;
}

LINGUA_OP_TEST(StridePermute, MatchesCpu, cases())

}  // namespace
