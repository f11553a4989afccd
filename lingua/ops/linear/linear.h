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

}  // namespace lingua
