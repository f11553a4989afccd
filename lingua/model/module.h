#pragma once
// What every model module (attention, an FFN variant, the block) shares: the per-step context and
// the arena-size helpers. Modules declare parameters in a ParamStore when built, save what
// backward needs into the step's arena in forward, and accumulate into their gradient views in
// backward. No autograd tape: what is kept and recomputed stays visible.
#include <cstdint>

#include "lingua/core/arena.h"
#include "lingua/core/tensor.h"

namespace lingua {

struct StepContext {
  // Where modules put memory: `saved` holds what forward keeps for backward (only with
  // save_for_backward); `scratch` holds what lives within one call (release it with a mark), in
  // forward and backward, and in a forward without saving also what would have been kept.
  Arena* saved = nullptr;
  Arena* scratch = nullptr;
  DType act = DType::f32;           // activation dtype: f32 on the CPU, bf16 on CUDA
  Tensor tokens;                    // [B * T] i32 input token ids on the model's device (STEM looks rows up by them)
  int B = 0, T = 0;
  int pos0 = 0;             // position of the first token (KV-cache decoding)
  bool save_for_backward = true;
  int64_t rows() const { return (int64_t)B * T; }
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
