#pragma once
// Scales the trailing rows and the trailing columns of a matrix by per-step factors (G_random's
// width masks, SPEC §5: the units a growth added enter with weight m, the source's with 1):
//   out[r, c] = x[r, c] * (r % P_r >= row_from ? *row_scale : 1) * (c % P_c >= col_from ? *col_scale : 1)
// with the periods P_r = row_period, P_c = col_period (0: the whole axis, R or C): a period scales
// the tail of every group of P indices (new units at the end of each of their blocks).
// A diagonal linear map, so its backward is the same call on the output's gradient. The factors
// are read from memory on the tensors' device (StepScalars slots), so a step captured as a CUDA
// graph reads each step's values; a null factor is 1. out may be x (in place, same dtype).
#include <cstdint>

#include "lingua/core/tensor.h"

namespace lingua {

void tail_scale(const Tensor& x,             // [R, C] f32 (CUDA: or bf16)
                int64_t row_from,            // rows [row_from, R) scaled (R or more: none), per period
                const float* row_scale,      // 1 float on the tensors' device, or null
                int64_t col_from,            // columns [col_from, C) scaled, per period
                const float* col_scale,      // 1 float on the tensors' device, or null
                const Tensor& out,           // [R, C] f32 (CUDA: or bf16), written; may be x
                int64_t row_period = 0,      // dividing R (0: R)
                int64_t col_period = 0);     // dividing C (0: C)

// ---- CUDA implementation (cuda.cu): x and out bf16 or f32 in any pairing (in place: the same
// dtype). Math in fp32, rounded once.
void tail_scale_cuda(const Tensor& x, int64_t row_from, const float* row_scale, int64_t col_from,
                     const float* col_scale, const Tensor& out, int64_t row_period, int64_t col_period);

}  // namespace lingua
