#pragma once
// Lookups in a table whose columns are split over a group of processes (Placement::column_slice:
// each holds [rows, C] of a [rows, P * C] table). A module that looks rows up by token (a per-layer
// token-indexed table) calls these instead of the embedding op when its table is sliced; the parallelism layer
// implements them (lingua/dist/table_parallel.h) and the executor hands its instance to the modules
// in StepContext::sliced_tables. Every process of the group calls each with the same row count.
#include <cstddef>
#include <cstdint>

#include "lingua/core/arena.h"
#include "lingua/core/tensor.h"

namespace lingua {

class SlicedTableLookup {
 public:
  virtual ~SlicedTableLookup() = default;
  // out[n, :] = the full row ids[n] of the table whose local columns are `slice`.
  virtual void forward(const Tensor& ids,     // [N] i32, this process's
                       const Tensor& slice,   // [V, C] f32, this process's columns
                       const Tensor& out,     // [N, P * C] activation dtype, written
                       Arena& scratch) = 0;   // transient memory (released on return)
  // dslice[v, :] += the local columns of every process's dout rows whose id is v (deterministic).
  virtual void backward(const Tensor& ids,     // [N] i32
                        const Tensor& dout,    // [N, P * C] activation dtype
                        const Tensor& dslice,  // [V, C] f32, accumulated
                        Arena& scratch) = 0;
};

// Scratch bytes a call takes at most for N rows of full width `width` (P * C) over a group of P:
// the group's ids and two [P * N, C] exchange buffers.
inline size_t sliced_lookup_scratch_bytes(int64_t rows, int64_t width, int group, DType act) {
  return Arena::round_up((size_t)(group * rows) * 4) + 2 * Arena::round_up((size_t)(rows * width) * dtype_size(act));
}

}  // namespace lingua
