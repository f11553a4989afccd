#pragma once
// Rotary position embedding on pairs of adjacent dimensions (2i, 2i+1), as Lingua/Llama:
//   freq_i = 1 / theta^(2i / hd),  angle = pos * freq_i (computed in fp32)
//   (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)
// Token t of the sequence has position pos0 + t. In place. Backward is the inverse rotation,
// also in place on the gradient. hd must be even.
#include <vector>

#include "lingua/core/tensor.h"

namespace lingua {

struct RopeTable {
  int max_pos = 0, half = 0;  // cos/sin: [max_pos, half] f32 (host memory)
  std::vector<float> cos, sin;
};
RopeTable rope_table(int max_pos, int head_dim, double theta);

void rope_forward(const Tensor& x,  // [B, T, H, hd] f32, rotated in place
                  const RopeTable& table, int pos0 = 0);
void rope_backward(const Tensor& dx,  // [B, T, H, hd] f32, inverse-rotated in place
                   const RopeTable& table, int pos0 = 0);

}  // namespace lingua
