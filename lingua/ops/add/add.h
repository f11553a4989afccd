#pragma once
// In-place elementwise add, the residual-stream update: dst[i] += src[i] over the flattened
// tensors (shapes may differ; the element counts must match). dst is fp32 (the residual stream);
// src is fp32, or bf16 on CUDA (a bf16 branch output added into the fp32 stream).
#include "lingua/core/tensor.h"

namespace lingua {

void add_into(const Tensor& dst,   // f32, any shape, updated in place
              const Tensor& src);  // f32 (or bf16 on CUDA), same numel as dst

// ---- CUDA implementation (cuda.cu) ----
// The function above dispatches here when dst is on the GPU. dst f32, src f32 or bf16, both on
// the GPU. 16-byte loads and stores when both pointers are 16-byte aligned; the sum is one fp32
// add per element, so results are bitwise those of the CPU.
void add_into_cuda(const Tensor& dst, const Tensor& src);

}  // namespace lingua
