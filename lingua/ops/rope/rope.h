#pragma once
// Rotary position embedding on pairs of adjacent dimensions (2i, 2i+1), as Lingua/Llama:
//   freq_i = 1 / theta^(2i / hd),  angle = pos * freq_i (computed in fp32)
//   (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)
// x holds B sequences of S rows: `prefix` rows that are not rotated (they have no position), then
// S - prefix token rows, token t having position pos0 + t. In place. Backward is the inverse
// rotation, also in place on the gradient. hd must be even.
//
// dtypes: the CPU path is fp32. On CUDA, x is f32 or bf16 (rotated in fp32, rounded back once). The
// GPU uses the table's own fp32 cos/sin values and rounds every product and sum like the CPU loop
// (no FMA contraction), so both rotate by identical angles.
#include <memory>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"

namespace lingua {

struct RopeTable {
  int max_pos = 0, half = 0;  // cos/sin: [max_pos, half] f32 (host memory)
  std::vector<float> cos, sin;
  // The CUDA path's copy of the same values, interleaved (cos, sin) as [max_pos, half, 2] f32.
  // Uploaded by the first GPU call (a synchronous copy), shared by copies of the table; empty on
  // the CPU path. Treat the table as immutable once built: cos/sin changed later are not re-uploaded.
  mutable std::shared_ptr<DeviceBuffer> device;
};
RopeTable rope_table(int max_pos, int head_dim, double theta);

void rope_forward(const Tensor& x,  // [B, S, H, hd], rows [prefix, S) of each sequence rotated in place
                  const RopeTable& table, int pos0 = 0, int prefix = 0);
void rope_backward(const Tensor& dx,  // [B, S, H, hd], rows [prefix, S) inverse-rotated in place
                   const RopeTable& table, int pos0 = 0, int prefix = 0);

// CUDA implementation (cuda.cu); called by the functions above for GPU tensors.
void rope_forward_cuda(const Tensor& x, const RopeTable& table, int pos0, int prefix = 0);
void rope_backward_cuda(const Tensor& dx, const RopeTable& table, int pos0, int prefix = 0);

}  // namespace lingua
