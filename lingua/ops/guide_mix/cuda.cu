// Guide mixing on the GPU: one grid-stride pass over the elements; alpha is read from device
// memory by every thread (one cached load), never by the host.
#include <algorithm>

#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/guide_mix/guide_mix.h"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

template <class TS, class TY>
__global__ void mix_kernel(const TS* __restrict__ s, const TS* __restrict__ w, const float* __restrict__ alpha,
                           const TY* residual, TY* y, int64_t n) {
  const float a = *alpha, b = 1.0f - a;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float v = a * to_f32(w[i]) + b * to_f32(s[i]);  // s may be y: read before the write
    if (residual) v = to_f32(residual[i]) + v;
    from_f32(v, y + i);
  }
}

template <class T>
__global__ void mix_backward_kernel(const T* dy, const float* __restrict__ alpha, T* ds, T* dw, int64_t n) {
  const float a = *alpha, b = 1.0f - a;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = to_f32(dy[i]);
    from_f32(b * g, ds + i);
    from_f32(a * g, dw + i);
  }
}

dim3 grid_for(int64_t n, int threads) {
  return dim3((unsigned)std::min<int64_t>((n + threads - 1) / threads, 65535 * 4));
}

template <class TS, class TY>
void launch_mix(const Tensor& s, const Tensor& w, const float* alpha, const Tensor& y, const Tensor& residual) {
  const int64_t n = y.numel();
  if (n == 0) return;
  mix_kernel<TS, TY><<<grid_for(n, 256), 256, 0, cuda_stream()>>>(
      (const TS*)s.data, (const TS*)w.data, alpha, is_given(residual) ? (const TY*)residual.data : nullptr,
      (TY*)y.data, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void guide_mix_forward_cuda(const Tensor& s, const Tensor& w, const float* alpha, const Tensor& y,
                            const Tensor& residual) {
  const char* op = "guide_mix_forward";
  check_cuda_arg(op, "s", s, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = s.size(0), W = s.size(1);
  check_cuda_arg(op, "w", w, {s.dtype}, {N, W});
  check_cuda_arg(op, "y", y, {DType::bf16, DType::f32}, {N, W});
  if (is_given(residual)) {
    check_cuda_arg(op, "residual", residual, {y.dtype}, {N, W});
    check_residual_aliasing(op, y, residual);
  }
  if (!alpha) fail(op, ": no alpha");
  if (s.data == y.data && s.dtype != y.dtype) fail(op, ": y is s in place but their dtypes differ");
  if (s.dtype == DType::bf16) {
    if (y.dtype == DType::bf16) return launch_mix<bf16, bf16>(s, w, alpha, y, residual);
    return launch_mix<bf16, float>(s, w, alpha, y, residual);
  }
  if (y.dtype == DType::bf16) return launch_mix<float, bf16>(s, w, alpha, y, residual);
  launch_mix<float, float>(s, w, alpha, y, residual);
}

void guide_mix_backward_cuda(const Tensor& dy, const float* alpha, const Tensor& ds, const Tensor& dw) {
  const char* op = "guide_mix_backward";
  check_cuda_arg(op, "dy", dy, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = dy.size(0), W = dy.size(1);
  check_cuda_arg(op, "ds", ds, {dy.dtype}, {N, W});
  check_cuda_arg(op, "dw", dw, {dy.dtype}, {N, W});
  if (!alpha) fail(op, ": no alpha");
  if (ds.data == dw.data && N * W > 0) fail(op, ": ds and dw are the same memory");
  const int64_t n = dy.numel();
  if (n == 0) return;
  if (dy.dtype == DType::bf16)
    mix_backward_kernel<bf16><<<grid_for(n, 256), 256, 0, cuda_stream()>>>(
        (const bf16*)dy.data, alpha, (bf16*)ds.data, (bf16*)dw.data, n);
  else
    mix_backward_kernel<float><<<grid_for(n, 256), 256, 0, cuda_stream()>>>(
        (const float*)dy.data, alpha, (float*)ds.data, (float*)dw.data, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
