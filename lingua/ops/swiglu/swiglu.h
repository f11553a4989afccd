#pragma once
// SwiGLU gate: out = silu(a) * b, silu(a) = a * sigmoid(a). Saved for backward: a, b.
//   backward writes da and db (not accumulated). An output may alias an input (same data pointer).
//
// dtypes: the CPU path is fp32. On CUDA all tensors of a call share one dtype, bf16 or f32; the
// math is fp32 (bf16 inputs widened, outputs rounded once).
#include "lingua/core/tensor.h"

namespace lingua {

void swiglu_forward(const Tensor& a,     // [N, H]
                    const Tensor& b,     // [N, H]
                    const Tensor& out);  // [N, H], written
void swiglu_backward(const Tensor& a, const Tensor& b,
                     const Tensor& dout,  // [N, H]
                     const Tensor& da,    // [N, H], written
                     const Tensor& db);   // [N, H], written

// CUDA implementation (cuda.cu); called by the functions above for GPU tensors.
void swiglu_forward_cuda(const Tensor& a, const Tensor& b, const Tensor& out);
void swiglu_backward_cuda(const Tensor& a, const Tensor& b, const Tensor& dout, const Tensor& da, const Tensor& db);

}  // namespace lingua
