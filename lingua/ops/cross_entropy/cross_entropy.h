#pragma once
// Fused output projection + cross-entropy, never materialising [N, V] logits at once (rows are
// processed in chunks). logits = x W^T; nll[n] = logsumexp(logits[n]) - logits[n, target[n]],
// computed in fp32 with max subtraction. target < 0 means "ignore this position" (nll 0, no grad).
// Returns the sum of nll over non-ignored rows (double).
// With dx / dw given, also computes the gradient of  loss = grad_scale * sum(nll):
//   dx written, dw accumulated. Pass empty tensors for a forward-only (eval) call.
#include "lingua/core/tensor.h"

namespace lingua {

double output_cross_entropy(const Tensor& x,        // [N, D] f32
                            const Tensor& w,        // [V, D] f32
                            const Tensor& targets,  // [N] i32
                            const Tensor& nll,      // [N] f32, written (may be empty)
                            float grad_scale,
                            const Tensor& dx,       // [N, D] f32, written, or empty
                            const Tensor& dw);      // [V, D] f32, accumulated, or empty

}  // namespace lingua
