#pragma once
// SwiGLU gate: out = silu(a) * b, silu(a) = a * sigmoid(a). Saved for backward: a, b.
//   backward writes da and db (not accumulated).
#include "lingua/core/tensor.h"

namespace lingua {

void swiglu_forward(const Tensor& a,     // [N, H] f32
                    const Tensor& b,     // [N, H] f32
                    const Tensor& out);  // [N, H] f32, written
void swiglu_backward(const Tensor& a, const Tensor& b,
                     const Tensor& dout,  // [N, H] f32
                     const Tensor& da,    // [N, H] f32, written
                     const Tensor& db);   // [N, H] f32, written

}  // namespace lingua
