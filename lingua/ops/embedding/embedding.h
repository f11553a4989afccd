#pragma once
// Token embedding lookup.
//   forward:  out[n, :] = table[ids[n], :]
//   backward: dtable[ids[n], :] += dout[n, :]   (accumulates; deterministic: rows in id order)
// An id outside [0, V) is an error naming the position and the id.
//
// dtypes: the CPU path is fp32 (ids i32). On CUDA (all tensors on the GPU, ids too):
//   forward:  ids i32 [N], table f32 or bf16 [V, D], out f32 or bf16 [N, D] (converted as needed);
//   backward: ids i32 [N], dout f32 or bf16 [N, D] (widened exactly), dtable f32 [V, D] accumulated. Deterministic without
//     float atomics, and bitwise equal to the CPU: the (id, position) pairs are sorted by id with a
//     stable radix sort, then each run of equal ids adds its dout rows to dtable[id] in position
//     order, one run per block and column tile. Scratch (about 16 N bytes plus the sort's
//     temporary storage) comes from a persistent per-process buffer, grown on first use (a stream
//     synchronisation and cudaMalloc), never in the steady state. Time grows with the longest run.
// Out-of-range ids on CUDA: the op cannot synchronise to check them, so the kernels record the
// smallest bad position (and its id) in a device error record, write zeros for that row of out
// (forward) or skip it (backward), and embedding_check_errors() reports it.
#include "lingua/core/tensor.h"

namespace lingua {

void embedding_forward(const Tensor& ids,    // [N] i32
                       const Tensor& table,  // [V, D]
                       const Tensor& out);   // [N, D], written
void embedding_backward(const Tensor& ids,     // [N] i32
                        const Tensor& dout,    // [N, D] f32 (CUDA: or bf16)
                        const Tensor& dtable);  // [V, D] f32, accumulated

// Throws the error of the first out-of-range id (smallest position) seen by the CUDA kernels since
// the last check, naming the op, the position and the id, then clears the record. Synchronises
// the stream when a CUDA embedding op has run; a no-op otherwise (the CPU path throws at once).
// Call it at a sync point (e.g. where the loss is read back).
void embedding_check_errors();

// CUDA implementation (cuda.cu); called by the functions above for GPU tensors.
void embedding_forward_cuda(const Tensor& ids, const Tensor& table, const Tensor& out);
void embedding_backward_cuda(const Tensor& ids, const Tensor& dout, const Tensor& dtable);
void embedding_check_errors_cuda();

}  // namespace lingua
