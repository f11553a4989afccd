// Module tokens' rows on the GPU: the forward one pass over the B x M x D elements; the backward
// one thread per parameter element, walking the sequences in order (the sum is deterministic and
// matches the CPU's order), scaling each dx element after reading it.
#include <algorithm>

#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/prefix_mix/prefix_mix.h"

namespace lingua {

namespace {

__global__ void forward_kernel(float* x, const float* __restrict__ p, int64_t B, int64_t S, int64_t row0, int64_t MD,
                               int64_t D, float a, float b) {
  const int64_t n = B * MD;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = k / MD, i = k % MD;
    float* xr = x + (s * S + row0) * D + i;
    *xr = a == 0.0f ? b * p[i] : a * *xr + b * p[i];
  }
}

template <class T>
__global__ void backward_kernel(float* dx, T* dx_act, float* dp, int64_t B, int64_t S, int64_t row0, int64_t MD,
                                int64_t D, float a, float b) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < MD; i += (int64_t)gridDim.x * blockDim.x) {
    float sum = 0;
    for (int64_t s = 0; s < B; ++s) {
      const int64_t at = (s * S + row0) * D + i;
      const float g = dx[at];
      sum += g;
      const float v = a == 0.0f ? 0.0f : a * g;
      dx[at] = v;
      if (dx_act) from_f32(v, dx_act + at);
    }
    if (dp) dp[i] += b * sum;
  }
}

dim3 grid_for(int64_t n, int threads) {
  return dim3((unsigned)std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535 * 4)));
}

}  // namespace

void prefix_mix_forward_cuda(const Tensor& x, const Tensor& p, int64_t S, int64_t row0, float a, float b) {
  const char* op = "prefix_mix_forward";
  check_cuda_arg(op, "p", p, {DType::f32}, {-1, -1});
  const int64_t M = p.size(0), D = p.size(1);
  check_cuda_arg(op, "x", x, {DType::f32}, {-1, D});
  const int64_t B = prefix_mix_sequences(op, x, M, D, S, row0);
  if (B * M * D == 0) return;
  forward_kernel<<<grid_for(B * M * D, 256), 256, 0, cuda_stream()>>>(x.f32(), p.f32(), B, S, row0, M * D, D, a, b);
  CUDA_CHECK_LAUNCH();
}

void prefix_mix_backward_cuda(const Tensor& dx, const Tensor& dx_act, const Tensor& dp, int64_t S, int64_t row0,
                              int64_t M, float a, float b) {
  const char* op = "prefix_mix_backward";
  check_cuda_arg(op, "dx", dx, {DType::f32}, {-1, -1});
  const int64_t D = dx.size(1);
  const int64_t B = prefix_mix_sequences(op, dx, M, D, S, row0);
  if (is_given(dp)) check_cuda_arg(op, "dp", dp, {DType::f32}, {M, D});
  const bool act = is_given(dx_act) && dx_act.data != dx.data;
  if (act) check_cuda_arg(op, "dx_act", dx_act, {DType::bf16, DType::f32}, {dx.size(0), D});
  if (M * D == 0) return;
  float* g = is_given(dp) ? dp.f32() : nullptr;
  const dim3 grid = grid_for(M * D, 256);
  if (act && dx_act.dtype == DType::bf16)
    backward_kernel<bf16><<<grid, 256, 0, cuda_stream()>>>(dx.f32(), (bf16*)dx_act.data, g, B, S, row0, M * D, D, a, b);
  else
    backward_kernel<float><<<grid, 256, 0, cuda_stream()>>>(dx.f32(), act ? dx_act.f32() : nullptr, g, B, S, row0,
                                                            M * D, D, a, b);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
