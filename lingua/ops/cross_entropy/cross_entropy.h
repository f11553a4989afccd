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

// The same computation with the loss kept where the tensors are, for a training step that never
// waits for the GPU (and can be captured in a CUDA graph):
//   *loss_sum = (accumulate ? *loss_sum : 0) + sum(nll)
// loss_sum: host memory for CPU tensors, device memory (one double the caller owns) for CUDA
// tensors. The sum is bitwise what output_cross_entropy returns for the same call. On CUDA nothing
// synchronises and nothing is read back, so a target >= V cannot be reported: such rows are
// treated as ignored (nll 0, no gradient) and the caller must validate the targets on the host.
// On the CPU a target >= V is still an Error.
void output_cross_entropy_sum(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                              float grad_scale, const Tensor& dx, const Tensor& dw,
                              double* loss_sum,  // host or device (see above), written
                              bool accumulate);

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
// The _sum form runs the same kernels, the final sum going to *loss_sum_device, with no read back.
// Both use cuda_op_scratch, the same amount for the same shapes: it is sized by the first call
// (capturing a call needs an earlier eager one with shapes at least as large).
double output_cross_entropy_cuda(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                                 float grad_scale, const Tensor& dx, const Tensor& dw, int64_t max_chunk_rows = 0);
void output_cross_entropy_sum_cuda(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                                   float grad_scale, const Tensor& dx, const Tensor& dw, double* loss_sum_device,
                                   bool accumulate, int64_t max_chunk_rows = 0);

}  // namespace lingua
