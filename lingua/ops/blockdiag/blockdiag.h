#pragma once
// Block-diagonal linear layer (the structured FFNs' BlockDense and BlockShuffle, SPEC §3): k
// independent products on consecutive column blocks of each row,
//   forward:  y[:, c*o:(c+1)*o] = x[:, c*i:(c+1)*i] W[c]^T      for c in [0, k)
//   backward: dx[:, c-th block] = dy[:, c-th block] W[c]         (written, or added)
//             dW[c] += dy[:, c-th block]^T x[:, c-th block]      (always accumulated)
// i.e. y = x blockdiag(W[0], ..., W[k-1])^T with W [k, o, i]. No copies: the blocks are strided
// views, one batched GEMM per product. dx or dw may be an empty Tensor to skip it; x is read only
// for dw. y / dx never alias the inputs.
#include "lingua/core/tensor.h"

namespace lingua {

void blockdiag_forward(const Tensor& x,   // [N, k*i] f32
                       const Tensor& w,   // [k, o, i] f32
                       const Tensor& y);  // [N, k*o] f32, written
void blockdiag_backward(const Tensor& x,   // [N, k*i] f32 (read only for dw)
                        const Tensor& w,   // [k, o, i] f32
                        const Tensor& dy,  // [N, k*o] f32
                        const Tensor& dx,  // [N, k*i] f32, written (or added), may be empty
                        const Tensor& dw,  // [k, o, i] f32, accumulated, may be empty
                        bool accumulate_dx = false);

// ---- CUDA implementation (cuda.cu): the linear op's GEMM (ops/linear/gemm.h), batched over the
// k blocks. dtypes as linear's: x, w, dy both bf16 or both f32; y / dx bf16 or f32 (f32 only from
// f32 inputs); dw f32.
void blockdiag_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y);
void blockdiag_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                             bool accumulate_dx);

}  // namespace lingua
