#pragma once
// Token embedding lookup.
//   forward:  out[n, :] = table[ids[n], :]
//   backward: dtable[ids[n], :] += dout[n, :]   (accumulates; deterministic: rows in id order)
// An id outside [0, V) is an error naming the position and the id.
#include "lingua/core/tensor.h"

namespace lingua {

void embedding_forward(const Tensor& ids,    // [N] i32
                       const Tensor& table,  // [V, D] f32
                       const Tensor& out);   // [N, D] f32, written
void embedding_backward(const Tensor& ids,     // [N] i32
                        const Tensor& dout,    // [N, D] f32
                        const Tensor& dtable);  // [V, D] f32, accumulated

}  // namespace lingua
