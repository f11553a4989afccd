#include <cmath>

#include "lingua/core/profiler.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/rope/rope.h"

namespace lingua {

// freq_i = 1 / theta^(2i / hd) is computed in double and rounded to float; the angle is the fp32
// product float(pos) * freq_i (as PyTorch's outer product in fp32), then cosf / sinf of it.
RopeTable rope_table(int max_pos, int head_dim, double theta) {
  LINGUA_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope_table: head_dim must be even and positive, got ", head_dim);
  LINGUA_CHECK(max_pos >= 0, "rope_table: max_pos must be >= 0, got ", max_pos);
  LINGUA_CHECK(theta > 0, "rope_table: theta must be positive, got ", theta);
  RopeTable t;
  t.max_pos = max_pos;
  t.half = head_dim / 2;
  t.cos.resize((size_t)max_pos * t.half);
  t.sin.resize((size_t)max_pos * t.half);
  for (int i = 0; i < t.half; ++i) {
    const float freq = (float)(1.0 / std::pow(theta, (2.0 * i) / head_dim));
    for (int p = 0; p < max_pos; ++p) {
      const float angle = (float)p * freq;
      t.cos[(size_t)p * t.half + i] = std::cos(angle);
      t.sin[(size_t)p * t.half + i] = std::sin(angle);
    }
  }
  return t;
}

namespace {

// Rotates each pair (2i, 2i+1) by +angle (forward) or -angle (backward, the inverse rotation).
void rope_apply(const char* op, const Tensor& x, const RopeTable& table, int pos0, int prefix, bool inverse) {
  check_f32(op, "x", x, {-1, -1, -1, -1});
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), hd = x.size(3);
  LINGUA_CHECK(prefix >= 0 && prefix <= S, op, ": prefix ", prefix, " is outside [0, ", S, "]");
  const int64_t T = S - prefix;
  LINGUA_CHECK(hd % 2 == 0, op, ": head_dim must be even, got ", hd);
  LINGUA_CHECK(hd == 2 * (int64_t)table.half, op, ": head_dim ", hd, " does not match the table (", 2 * table.half,
               ")");
  LINGUA_CHECK(pos0 >= 0 && pos0 + T <= table.max_pos, op, ": positions [", pos0, ", ", pos0 + T,
               ") exceed the table's max_pos ", table.max_pos);
  const int64_t half = table.half;
  const float sign = inverse ? -1.0f : 1.0f;
  float* xs = x.f32();
#pragma omp parallel for collapse(2) schedule(static) if (B * T * H * hd > kMinParallelElements)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float* cs = table.cos.data() + (pos0 + t) * half;
      const float* sn = table.sin.data() + (pos0 + t) * half;
      for (int64_t h = 0; h < H; ++h) {
        float* row = xs + ((b * S + prefix + t) * H + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = row[2 * i], x1 = row[2 * i + 1];
          const float c = cs[i], s = sign * sn[i];
          row[2 * i] = x0 * c - x1 * s;
          row[2 * i + 1] = x0 * s + x1 * c;
        }
      }
    }
}

}  // namespace

void rope_forward(const Tensor& x, const RopeTable& table, int pos0, int prefix) {
  LINGUA_PROFILE_SCOPE("rope_forward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return rope_forward_cuda(x, table, pos0, prefix);
#endif
  rope_apply("rope_forward", x, table, pos0, prefix, false);
}

void rope_backward(const Tensor& dx, const RopeTable& table, int pos0, int prefix) {
  LINGUA_PROFILE_SCOPE("rope_backward");
#ifdef LINGUA_CUDA
  if (dx.device == Device::cuda) return rope_backward_cuda(dx, table, pos0, prefix);
#endif
  rope_apply("rope_backward", dx, table, pos0, prefix, true);
}

}  // namespace lingua
