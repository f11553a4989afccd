#pragma once
// Linear layer without bias, PyTorch's weight layout: y = x W^T.
//   forward:  y[N, out] = x[N, in] W[out, in]^T (+ residual[N, out], fused: no separate add kernel)
//   backward: dx = dy W (written, or added when accumulate_dx), dW += dy^T x (always accumulated)
// Saved for backward: x (the caller keeps it). dx or dw may be an empty Tensor (data == nullptr)
// to skip that gradient. residual may be empty (y = x W^T), y itself (y += x W^T, in place) or a
// buffer disjoint from y; a partial overlap fails. The residual's gradient is dy itself.
#include "lingua/core/tensor.h"

namespace lingua {

void linear_forward(const Tensor& x,                    // [N, in] f32
                    const Tensor& w,                    // [out, in] f32
                    const Tensor& y,                    // [N, out] f32, written
                    const Tensor& residual = Tensor());  // [N, out] f32, added; may be y or empty
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
//   residual: y's dtype (f32 for the fp32 residual stream). cuBLASLt's C with beta = 1, y is D;
//          C and D share one layout, so C may be y (in place) or another buffer.
//   dy:    the dtype of x
//   dx:    bf16 or f32 when x is bf16; f32 when x is f32. Written, or added (accumulate_dx).
//   dw:    f32, always accumulated (dw += dy^T x)
// Deterministic: one cuBLASLt algorithm per problem (cached), restricted to reduction schemes
// without atomics; shapes cuBLASLt has no algorithm for go to a simple deterministic kernel.
void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& residual);
// Without a residual (kept for direct callers such as cross_entropy).
inline void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y) {
  linear_forward_cuda(x, w, y, Tensor());
}
void linear_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                          bool accumulate_dx = false);
// For tests: route every product through that fallback kernel instead of cuBLASLt.
void linear_cuda_force_fallback(bool on);
// For tests: how many products have run the fallback kernel (forced or not) in this process.
uint64_t linear_cuda_fallback_count();

}  // namespace lingua
