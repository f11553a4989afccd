#pragma once
// Matrix transpose: y[C, R] = x[R, C]^T (row-major), converting the dtype on the way. Used to turn
// a product computed as S^T (a structured linear run on the identity) into the [out, in] weight
// a dense matmul reads (pre-merge), so no other op needs a transposed-weight form.
#include "lingua/core/tensor.h"

namespace lingua {

void transpose(const Tensor& x,   // [R, C] f32
               const Tensor& y);  // [C, R] f32, written; must not overlap x

// ---- CUDA implementation (cuda.cu): x and y bf16 or f32, any pair (rounded once when y is bf16);
// shared-memory tiles so both the reads and the writes are coalesced.
void transpose_cuda(const Tensor& x, const Tensor& y);

}  // namespace lingua
