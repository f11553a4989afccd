#pragma once
// SwiGLU gate: out = silu(a) * b, silu(a) = a * sigmoid(a). Saved for backward: a, b.
//   backward writes da and db (not accumulated) and, when `out` is given, recomputes the forward
//   output into it: the FFN then need not keep out from forward to backward (its weight gradient
//   reads it). An output may alias an input (same data pointer): every element is read before the
//   element at the same index is written.
//
// dtypes: the CPU path is fp32. On CUDA all tensors of a call share one dtype, bf16 or f32; the
// math is fp32 (bf16 inputs widened, outputs rounded once).
#include "lingua/core/tensor.h"

namespace lingua {

void swiglu_forward(const Tensor& a,     // [N, H]
                    const Tensor& b,     // [N, H]
                    const Tensor& out);  // [N, H], written
void swiglu_backward(const Tensor& a, const Tensor& b,
                     const Tensor& dout,  // [N, H]
                     const Tensor& da,    // [N, H], written
                     const Tensor& db,    // [N, H], written
                     const Tensor& out = Tensor());  // [N, H], written with silu(a) * b, optional

// Packed form, for an FFN that computes w1 x and w3 x with one matmul: ab [N, 2H] holds row n as
// (a[n, 0..H), b[n, 0..H)). Same math and aliasing rules as above; dab [N, 2H] may alias ab,
// out may alias dout.
void swiglu_forward_packed(const Tensor& ab,    // [N, 2H]
                           const Tensor& out);  // [N, H], written
void swiglu_backward_packed(const Tensor& ab,    // [N, 2H]
                            const Tensor& dout,  // [N, H]
                            const Tensor& dab,   // [N, 2H], written (da, db packed like ab)
                            const Tensor& out = Tensor());  // [N, H], silu(a) * b, optional

// Shuffled packed form, for an fc1 whose last step is a stride permutation (BlockShuffle): the
// packed ab is stride_permute(v, 2H / k) of the v given, i.e.
//   ab[n, j] = v[n, (j % k) * (2H / k) + j / k]      (k divides H)
// and the gradient comes back in v's order (dv = the inverse permutation of dab). Reading v
// through the permutation saves two passes over [N, 2H] (the permutation and its gradient's).
// dv may alias v, out may alias dout.
void swiglu_forward_shuffled(const Tensor& v,  // [N, 2H]
                             int64_t k,
                             const Tensor& out);  // [N, H], written
void swiglu_backward_shuffled(const Tensor& v,     // [N, 2H]
                              int64_t k,
                              const Tensor& dout,  // [N, H]
                              const Tensor& dv,    // [N, 2H], written
                              const Tensor& out = Tensor());  // [N, H], silu(a) * b, optional

// CUDA implementation (cuda.cu); called by the functions above for GPU tensors.
void swiglu_forward_packed_cuda(const Tensor& ab, const Tensor& out);
void swiglu_backward_packed_cuda(const Tensor& ab, const Tensor& dout, const Tensor& dab, const Tensor& out);
void swiglu_forward_shuffled_cuda(const Tensor& v, int64_t k, const Tensor& out);
void swiglu_backward_shuffled_cuda(const Tensor& v, int64_t k, const Tensor& dout, const Tensor& dv, const Tensor& out);
void swiglu_forward_cuda(const Tensor& a, const Tensor& b, const Tensor& out);
void swiglu_backward_cuda(const Tensor& a, const Tensor& b, const Tensor& dout, const Tensor& da, const Tensor& db,
                          const Tensor& out);

}  // namespace lingua
