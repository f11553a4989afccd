#pragma once
// Internal to the ops built on the linear op's products (linear, blockdiag, stride_permute): the
// residual / y aliasing rule and the dtypes a GPU product may write.
#include <cstdint>

#include "lingua/core/tensor.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

// residual (already checked to have y's shape and dtype) must be y itself or lie wholly outside
// it: a partial overlap would read elements the same call has already overwritten.
inline void check_residual_aliasing(const char* op, const Tensor& y, const Tensor& residual) {
  if (residual.data == y.data || y.numel() == 0) return;
  const uintptr_t r = reinterpret_cast<uintptr_t>(residual.data), d = reinterpret_cast<uintptr_t>(y.data);
  const uintptr_t bytes = y.nbytes();
  if (r < d + bytes && d < r + bytes)
    fail(op, ": argument 'residual' (", residual.str(), ") partially overlaps 'y' (", y.str(),
         "); it must be y itself or a disjoint buffer");
}

// A GPU product's output (y, dx): bf16 or f32 from bf16 operands, f32 from f32 operands.
inline void check_cuda_product_out(const char* op, const char* arg, const Tensor& t, DType operands,
                                   std::initializer_list<int64_t> dims) {
  if (operands == DType::bf16)
    check_cuda_arg(op, arg, t, {DType::bf16, DType::f32}, dims);
  else
    check_cuda_arg(op, arg, t, {DType::f32}, dims);
}

}  // namespace lingua
