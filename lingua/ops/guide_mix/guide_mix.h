#pragma once
// The mixing of self-guided training (structured FFN layers, SPEC §3): a structured linear's
// output s = S x and its dense guide's w = W x, weighted by the step's alpha,
//   forward:  y = residual + alpha * w + (1 - alpha) * s
//   backward: ds = (1 - alpha) * dy,  dw = alpha * dy
// elementwise. alpha is read from memory on the tensors' device (a StepScalars slot), so a step
// captured as a CUDA graph reads each step's value. y may be s itself or residual itself (in
// place); residual may be empty. ds or dw may be dy itself.
#include "lingua/core/tensor.h"

namespace lingua {

void guide_mix_forward(const Tensor& s,              // [N, W] f32
                       const Tensor& w,              // [N, W] f32
                       const float* alpha,           // 1 float on the tensors' device
                       const Tensor& y,              // [N, W] f32, written
                       const Tensor& residual = Tensor());  // [N, W] f32, added; may be y or empty
void guide_mix_backward(const Tensor& dy,     // [N, W] f32
                        const float* alpha,   // 1 float on the tensors' device
                        const Tensor& ds,     // [N, W] f32, written
                        const Tensor& dw);    // [N, W] f32, written

// ---- CUDA implementation (cuda.cu): s, w bf16 or f32 (the same); y bf16 or f32, residual y's
// dtype; dy bf16 or f32, ds and dw dy's dtype. Math in fp32, rounded once.
void guide_mix_forward_cuda(const Tensor& s, const Tensor& w, const float* alpha, const Tensor& y,
                            const Tensor& residual);
void guide_mix_backward_cuda(const Tensor& dy, const float* alpha, const Tensor& ds, const Tensor& dw);

}  // namespace lingua
