#pragma once
// dst = src converted between f32 and bf16 (round to nearest even), or copied when the dtypes
// match. Same number of elements, same device. The GPU path uses it where an fp32 residual-stream
// gradient feeds a bf16 matmul.
#include "lingua/core/tensor.h"

namespace lingua {

void cast_into(const Tensor& dst,   // [n] f32 or bf16, written
               const Tensor& src);  // [n] f32 or bf16

// CUDA implementation (cuda.cu).
void cast_into_cuda(const Tensor& dst, const Tensor& src);

}  // namespace lingua
