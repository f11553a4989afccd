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

// ---- CUDA implementation (cuda.cu) ----
// The function above dispatches here when x is on the GPU. Every tensor on the GPU:
//   x [N, D] bf16, w [V, D] bf16, targets [N] i32, nll [N] f32 (or empty),
//   dx [N, D] bf16 written (or empty), dw [V, D] f32 accumulated (or empty).
// Rows are processed in chunks whose bf16 logits take at most 256 MiB: per chunk, logits =
// x_chunk W^T (bf16, fp32 accumulation), a kernel per row computes max / logsumexp / nll in fp32
// and overwrites the logits with dlogits = (softmax - onehot) * grad_scale (bf16), then
// dx_chunk = dlogits W and dw += dlogits^T x_chunk. The returned sum is reduced on the GPU in a
// fixed order (deterministic) and copied back: the call synchronises once, at its end.
// A target >= V is reported (naming the row and the value) after the call has run with that row
// treated as ignored. max_chunk_rows > 0 caps the rows per chunk (tests force several chunks).
double output_cross_entropy_cuda(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                                 float grad_scale, const Tensor& dx, const Tensor& dw, int64_t max_chunk_rows = 0);

}  // namespace lingua
