#pragma once
// RMSNorm in fp32: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), one rstd per row.
// Saved for backward: x and rstd.
//   backward: dx written (or added when accumulate_dx), dw accumulated.
#include "lingua/core/tensor.h"

namespace lingua {

void rmsnorm_forward(const Tensor& x,     // [N, D] f32
                     const Tensor& w,     // [D] f32
                     float eps,
                     const Tensor& y,     // [N, D] f32, written
                     const Tensor& rstd); // [N] f32, written
void rmsnorm_backward(const Tensor& x,     // [N, D] f32
                      const Tensor& w,     // [D] f32
                      const Tensor& rstd,  // [N] f32
                      const Tensor& dy,    // [N, D] f32
                      const Tensor& dx,    // [N, D] f32, written (or added)
                      const Tensor& dw,    // [D] f32, accumulated
                      bool accumulate_dx = false);

}  // namespace lingua
