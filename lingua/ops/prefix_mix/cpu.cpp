#include "lingua/core/profiler.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/prefix_mix/prefix_mix.h"

namespace lingua {

int64_t prefix_mix_sequences(const char* op, const Tensor& x, int64_t M, int64_t D, int64_t S, int64_t row0) {
  check_shape(op, "x", x, {-1, D});
  if (S <= 0 || row0 < 0 || row0 + M > S)
    fail(op, ": rows [", row0, ", ", row0 + M, ") do not fit in sequences of ", S, " rows");
  if (x.size(0) % S != 0) fail(op, ": ", x.size(0), " rows are not whole sequences of ", S);
  return x.size(0) / S;
}

void prefix_mix_forward(const Tensor& x, const Tensor& p, int64_t S, int64_t row0, float a, float b) {
  LINGUA_PROFILE_SCOPE("prefix_mix_forward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return prefix_mix_forward_cuda(x, p, S, row0, a, b);
#endif
  const char* op = "prefix_mix_forward";
  check_f32(op, "p", p, {-1, -1});
  const int64_t M = p.size(0), D = p.size(1);
  check_f32(op, "x", x, {-1, D});
  const int64_t B = prefix_mix_sequences(op, x, M, D, S, row0);
  const float* pp = p.f32();
  for (int64_t s = 0; s < B; ++s) {
    float* xr = x.f32() + (s * S + row0) * D;
    for (int64_t i = 0; i < M * D; ++i) xr[i] = a == 0.0f ? b * pp[i] : a * xr[i] + b * pp[i];
  }
}

void prefix_mix_backward(const Tensor& dx, const Tensor& dx_act, const Tensor& dp, int64_t S, int64_t row0, int64_t M,
                         float a, float b) {
  LINGUA_PROFILE_SCOPE("prefix_mix_backward");
#ifdef LINGUA_CUDA
  if (dx.device == Device::cuda) return prefix_mix_backward_cuda(dx, dx_act, dp, S, row0, M, a, b);
#endif
  const char* op = "prefix_mix_backward";
  check_f32(op, "dx", dx, {-1, -1});
  const int64_t D = dx.size(1);
  const int64_t B = prefix_mix_sequences(op, dx, M, D, S, row0);
  if (is_given(dp)) {
    check_f32(op, "dp", dp, {M, D});
    float* g = dp.f32();
    for (int64_t i = 0; i < M * D; ++i) {
      float sum = 0;  // over the sequences, in order (as the CUDA kernel)
      for (int64_t s = 0; s < B; ++s) sum += dx.f32()[(s * S + row0) * D + i];
      g[i] += b * sum;
    }
  }
  if (is_given(dx_act)) check_f32(op, "dx_act", dx_act, {dx.size(0), D});
  for (int64_t s = 0; s < B; ++s) {
    float* r = dx.f32() + (s * S + row0) * D;
    for (int64_t i = 0; i < M * D; ++i) r[i] = a == 0.0f ? 0.0f : a * r[i];
    if (is_given(dx_act) && dx_act.data != dx.data)
      for (int64_t i = 0; i < M * D; ++i) dx_act.f32()[(s * S + row0) * D + i] = r[i];
  }
}

}  // namespace lingua
