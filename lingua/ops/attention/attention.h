#pragma once
// Causal scaled-dot-product attention with grouped-query heads (GQA).
// Query head h reads kv head h / (H / KV). Scale 1/sqrt(hd). Queries are the last T of S
// positions: query t attends keys s <= t + (S - T) (S == T in training; S > T with a KV cache).
//   forward writes out and lse (log-sum-exp of the scaled scores per query row, natural log),
//   which is all backward needs besides q, k, v, out.
//   backward (S == T only) writes dq, dk, dv (not accumulated).
#include <string>

#include "lingua/core/tensor.h"

namespace lingua {

void attention_forward(const Tensor& q,    // [B, T, H, hd] f32
                       const Tensor& k,    // [B, S, KV, hd] f32
                       const Tensor& v,    // [B, S, KV, hd] f32
                       const Tensor& out,  // [B, T, H, hd] f32, written
                       const Tensor& lse); // [B, H, T] f32, written (may be empty: inference)
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out,   // [B, T, H, hd] f32
                        const Tensor& lse,   // [B, H, T] f32
                        const Tensor& dout,  // [B, T, H, hd] f32
                        const Tensor& dq,    // [B, T, H, hd] f32, written
                        const Tensor& dk,    // [B, T, KV, hd] f32, written
                        const Tensor& dv);   // [B, T, KV, hd] f32, written

// Decoding B sequences over their KV cache: k and v hold `len` >= S rows per sequence (the
// cache's capacity), of which the first S are the keys; queries are the last T of those S
// positions. The same math as attention_forward (lse not written).
void attention_forward_cached(const Tensor& q,    // [B, T, H, hd]
                              const Tensor& k,    // [B, len, KV, hd]
                              const Tensor& v,    // [B, len, KV, hd]
                              int64_t S,          // keys per sequence, T <= S <= len
                              const Tensor& out); // [B, T, H, hd], written

// Why a training step's attention over sequences of S rows (head_dim hd) would not run on cuDNN on
// this machine (forward or backward): "" when it would. For warnings: our own kernels are exact
// but several times slower.
std::string attention_cudnn_refusal(int64_t S, int64_t hd, bool backward);

// CUDA implementation (attention/cuda.cu), reached through the functions above for GPU tensors.
// q, k, v, out, dout, dq, dk, dv all bf16 (or all f32: exact fallback kernels), lse f32, same
// layouts and contract; head_dim <= 256. cuDNN's fused flash attention runs where it applies
// (bf16, head_dim 64 / 128, S == T), our own deterministic kernels elsewhere; LINGUA_ATTENTION=
// auto | fallback | cudnn forces one (attention/cuda_internal.h).
void attention_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse);
void attention_forward_cached_cuda(const Tensor& q, const Tensor& k, const Tensor& v, int64_t S, const Tensor& out);
void attention_backward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv);

}  // namespace lingua
