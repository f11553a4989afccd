#pragma once
// RMSNorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), one rstd per row.
// Saved for backward: x and rstd.
//   backward: dx written (or added when accumulate_dx), dw accumulated. dx may alias dy (same
//   dtype): every element of dy is read before the element of dx at the same index is written.
//   dx_copy (optional, Tensor() to skip): also receives the final dx (after the accumulation),
//   converted to its own dtype, in the same pass (e.g. the fp32 residual gradient and its bf16
//   copy for the next matmul). It must not overlap x, dy or dx.
//
// dtypes: the CPU path is fp32 throughout. On CUDA (all tensors on the GPU), math is fp32 and
//   x: f32 or bf16, w: f32, y: f32 or bf16, rstd: f32;
//   backward: dy f32 or bf16, dx f32 or bf16, dw f32, dx_copy f32 or bf16 (any mix of these;
//   bf16 stores round to nearest even).
// CUDA backward is deterministic without float atomics: block b sums dw over a fixed range of rows
// into a [blocks, D] fp32 scratch (a persistent per-process buffer, grown on first use), then a
// second kernel adds the partials into dw in a fixed tree order. The number of blocks and the
// summation order depend on N and D only (and on whether the 16-byte path applies), not on the GPU.
#include "lingua/core/tensor.h"

namespace lingua {

void rmsnorm_forward(const Tensor& x,     // [N, D]
                     const Tensor& w,     // [D] f32
                     float eps,
                     const Tensor& y,     // [N, D], written
                     const Tensor& rstd); // [N] f32, written
void rmsnorm_backward(const Tensor& x,     // [N, D]
                      const Tensor& w,     // [D] f32
                      const Tensor& rstd,  // [N] f32
                      const Tensor& dy,    // [N, D]
                      const Tensor& dx,    // [N, D], written (or added)
                      const Tensor& dw,    // [D] f32, accumulated
                      bool accumulate_dx = false,
                      const Tensor& dx_copy = Tensor());  // [N, D] or empty, written: the final dx

// CUDA implementation (cuda.cu); called by the functions above for GPU tensors.
void rmsnorm_forward_cuda(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd);
void rmsnorm_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                           const Tensor& dw, bool accumulate_dx, const Tensor& dx_copy);

}  // namespace lingua
