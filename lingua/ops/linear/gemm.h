#pragma once
// The GEMM behind the linear op, for other ops built from matrix products (blockdiag):
// cuBLASLt with fp32 accumulation, one cached deterministic algorithm per problem, a simple
// deterministic kernel where cuBLASLt has none (see cuda.cu). Column-major, like cuBLAS:
//   for b in [0, batch): D_b[m, n] = op(A_b)[m, k] op(B_b)[k, n] + beta C_b
// with X_b = X + b * stride_x (elements). beta is 0 (C never read) or 1 (accumulated); C is D or
// disjoint from it and shares its dtype and layout.
#include <cstdint>

#include "lingua/core/tensor.h"

namespace lingua {

struct Gemm {
  bool ta = false, tb = false;  // op(X) = X^T when set
  int64_t m = 0, n = 0, k = 0;
  DType ab = DType::bf16, c = DType::f32;  // c: the dtype of C and D
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  const void* C = nullptr;  // read only when beta != 0
  void* D = nullptr;
  int64_t ldc = 0;  // of C and D
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;  // stride_c: of C and D
};

void gemm_cuda(const Gemm& g, float beta);
// The same product on the CPU (gemm_host.cpp; OpenBLAS, f32 operands and output): for ops whose
// CPU path runs the GEMMs their CUDA path runs.
void gemm_host(const Gemm& g, float beta);

}  // namespace lingua
