#pragma once
// Stride permutation of each row (BlockShuffle's shuffle, SPEC §3): a row of width k*m, read as
// [m, k], is written transposed as [k, m]: output block c collects the input elements c, c + k,
// c + 2k, ...
//   y[n, c*m + a] (+)= x[n, a*k + c]      for c in [0, k), a in [0, m)
// Its inverse (and its gradient) is the same op with k and m swapped: stride_permute(y, x, m).
// residual may be empty (y written), y itself (y += P x) or a buffer disjoint from y. x never
// aliases y.
#include "lingua/core/tensor.h"

namespace lingua {

void stride_permute(const Tensor& x,  // [N, k*m] f32
                    int64_t k,
                    const Tensor& y,                    // [N, k*m] f32, written
                    const Tensor& residual = Tensor());  // [N, k*m] f32, added; may be y or empty

// ---- CUDA implementation (cuda.cu): x bf16 or f32; y bf16 or f32; residual y's dtype; the sum in
// fp32, rounded once.
void stride_permute_cuda(const Tensor& x, int64_t k, const Tensor& y, const Tensor& residual);

}  // namespace lingua
