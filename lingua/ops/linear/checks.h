#pragma once
// Internal to the linear op (cpu.cpp, cuda.cu): the residual / y aliasing rule.
#include <cstdint>

#include "lingua/core/tensor.h"

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

}  // namespace lingua
