#pragma once
// Linear layer without bias, PyTorch's weight layout: y = x W^T.
//   forward:  y[N, out] = x[N, in] W[out, in]^T
//   backward: dx = dy W (written, or added when accumulate_dx), dW += dy^T x (always accumulated)
// Saved for backward: x (the caller keeps it). dx or dw may be an empty Tensor (data == nullptr)
// to skip that gradient.
#include "lingua/core/tensor.h"

namespace lingua {

void linear_forward(const Tensor& x,   // [N, in] f32
                    const Tensor& w,   // [out, in] f32
                    const Tensor& y);  // [N, out] f32, written
void linear_backward(const Tensor& x,   // [N, in] f32
                     const Tensor& w,   // [out, in] f32
                     const Tensor& dy,  // [N, out] f32
                     const Tensor& dx,  // [N, in] f32, written (or added), may be empty
                     const Tensor& dw,  // [out, in] f32, accumulated, may be empty
                     bool accumulate_dx = false);

// ---- CUDA implementation (cuda.cu) ----
// The public functions above dispatch here when x is on the GPU. cuBLASLt, fp32 accumulation
// (CUBLAS_COMPUTE_32F, never TF32), all tensors on the GPU, contiguous row-major.
//   x, w:  both bf16 (training) or both f32 (an exact path, mainly for tests)
//   y:     bf16 or f32 when x is bf16; f32 when x is f32
//   dy:    the dtype of x
//   dx:    bf16 or f32 when x is bf16; f32 when x is f32. Written, or added (accumulate_dx).
//   dw:    f32, always accumulated (dw += dy^T x)
// Deterministic: one cuBLASLt algorithm per problem (cached), restricted to reduction schemes
// without atomics; shapes cuBLASLt has no algorithm for go to a simple deterministic kernel.
void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y);
void linear_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                          bool accumulate_dx = false);
// For tests: route every product through that fallback kernel instead of cuBLASLt.
void linear_cuda_force_fallback(bool on);

}  // namespace lingua
