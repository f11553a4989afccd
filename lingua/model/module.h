#pragma once
// What every model module (Linear, attention, an FFN variant, the block, the head) shares: the
// layout of a micro-batch's rows, the per-call context and the arena-size helpers. Modules declare
// parameters in a ParamStore when built, save what backward needs into the step's arena in forward,
// and accumulate into their gradient views in backward. No autograd tape: what is kept and
// recomputed stays visible. Modules are single-device; the executor (lingua/exec) runs them.
#include <cstdint>

#include "lingua/core/arena.h"
#include "lingua/core/tensor.h"

namespace lingua {

// The rows of a micro-batch: B sequences, each `prefix` extra rows then T token rows, row-major
// ([B, prefix + T, ...]). Prefix rows (learned module tokens, say) take part in attention, where
// every token row can attend to them (they come first under the causal mask), and in the FFN, but
// get no RoPE rotation (token t of a sequence has position pos0 + t whatever the prefix) and no
// loss (they are dropped before the output head). Their values come from a hook of the executor.
struct SeqLayout {
  int B = 0, T = 0;
  int prefix = 0;
  int S() const { return prefix + T; }                         // rows per sequence
  int64_t rows() const { return (int64_t)B * S(); }            // rows the layers see
  int64_t token_rows() const { return (int64_t)B * T; }        // rows with a token (and a target)
};

class SlicedTableLookup;  // sliced_table.h

struct StepContext {
  // Where modules put memory: `saved` holds what forward keeps (for backward, or for the next
  // stage: a block's output, the head's norm output); `scratch` holds what lives within one call
  // (release it with a mark), in forward and backward, and in a forward without saving also the
  // tensors a module would otherwise keep for backward.
  Arena* saved = nullptr;
  Arena* scratch = nullptr;
  DType act = DType::f32;  // activation dtype: f32 on the CPU, bf16 on CUDA
  SeqLayout seq;
  // [B * T] i32 input token ids on the model's device (the token rows', in order; a module that
  // looks rows up by token reads them).
  Tensor tokens;
  int pos0 = 0;  // position of the first token (KV-cache decoding)
  bool save_for_backward = true;
  // Training: this micro-batch is the last of its step, so every gradient is complete after its
  // backward (data-parallel hooks reduce them then, and only then).
  bool last_micro_batch = true;
  bool first_micro_batch = true;  // ... the first (sharded weights are gathered once per step)
  // With norm recomputation: the one [rows, dim] buffer every block's norm outputs use.
  Tensor shared_norm;
  // Lookups in tables split by columns over processes (sliced_table.h); null on one process.
  SlicedTableLookup* sliced_tables = nullptr;
  int64_t rows() const { return seq.rows(); }
};

// The arena a forward takes what it keeps for backward from: scratch when nothing is saved.
inline Arena& forward_arena(const StepContext& ctx) { return ctx.save_for_backward ? *ctx.saved : *ctx.scratch; }

// Arena bytes a tensor of n elements of dtype dt takes (slices are 64-byte aligned).
inline size_t arena_bytes(int64_t n, DType dt = DType::f32) { return Arena::round_up((size_t)n * dtype_size(dt)); }

// A tensor of `dims` in the arena's memory (host or device).
inline Tensor arena_tensor(Arena& a, std::initializer_list<int64_t> dims, DType dt = DType::f32) {
  int64_t n = 1;
  for (auto d : dims) n *= d;
  return Tensor(a.alloc((size_t)n * dtype_size(dt)), dims, dt, a.device());
}

// A view of `t`'s memory with other dims (same dtype and device).
inline Tensor reshape(const Tensor& t, std::initializer_list<int64_t> dims) {
  Tensor r(t.data, dims, t.dtype, t.device);
  LINGUA_ASSERT(r.numel() == t.numel());
  return r;
}

}  // namespace lingua
