#pragma once
// Module tokens' rows of the residual stream (SPEC §4): x holds B sequences of S rows; in each,
// the M rows [row0, row0 + M) take a layer's parameter block p, weighted with what they hold:
//   forward:  x[s, row0 + i, :] = a * x[s, row0 + i, :] + b * p[i, :]          (in place)
//             (a = 0: the rows are b * p, whatever x held)
//   backward: dp[i, :] += b * sum_s dx[s, row0 + i, :]
//             dx[s, row0 + i, :] = a * dx[s, row0 + i, :]                      (in place; a = 0: 0)
//             dx_act (given): the same rows of dx's copy in the activation dtype, set to dx's
//             rounded (it may be dx itself)
// The aggregation modes of module tokens are the pairs (a, b) (lingua/model/module_tokens.h). The
// sum over the sequences is made in a fixed order (deterministic on both backends).
#include <cstdint>

#include "lingua/core/tensor.h"

namespace lingua {

void prefix_mix_forward(const Tensor& x,  // [B * S, D] f32, rows [row0, row0 + M) of each sequence updated
                        const Tensor& p,  // [M, D] f32
                        int64_t S, int64_t row0, float a, float b);
void prefix_mix_backward(const Tensor& dx,      // [B * S, D] f32, the rows scaled by a in place
                         const Tensor& dx_act,  // [B * S, D] bf16 or f32, or empty; may be dx
                         const Tensor& dp,      // [M, D] f32, accumulated; empty: no parameter gradient
                         int64_t S, int64_t row0, int64_t M, float a, float b);

// ---- CUDA implementation (cuda.cu): the same contract; dx_act bf16 or f32.
void prefix_mix_forward_cuda(const Tensor& x, const Tensor& p, int64_t S, int64_t row0, float a, float b);
void prefix_mix_backward_cuda(const Tensor& dx, const Tensor& dx_act, const Tensor& dp, int64_t S, int64_t row0,
                              int64_t M, float a, float b);

// Shared by both backends: checks the shapes (and that the rows fit in a sequence); returns B.
int64_t prefix_mix_sequences(const char* op, const Tensor& x, int64_t M, int64_t D, int64_t S, int64_t row0);

}  // namespace lingua
