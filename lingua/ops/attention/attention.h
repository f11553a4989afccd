#pragma once
// Causal scaled-dot-product attention with grouped-query heads (GQA).
// Query head h reads kv head h / (H / KV). Scale 1/sqrt(hd). Queries are the last T of S
// positions: query t attends keys s <= t + (S - T) (S == T in training; S > T with a KV cache).
//   forward writes out and lse (log-sum-exp of the scaled scores per query row, natural log),
//   which is all backward needs besides q, k, v, out.
//   backward (S == T only) writes dq, dk, dv (not accumulated).
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

}  // namespace lingua
