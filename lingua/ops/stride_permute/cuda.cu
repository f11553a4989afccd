// Stride permutation on the GPU: one thread per output element, consecutive threads write
// consecutive elements (reads are k elements apart; k is a small block count).
#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/stride_permute/stride_permute.h"

namespace lingua {

namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16* p, float v) { *p = __float2bfloat16_rn(v); }

template <class TX, class TY>
__global__ void stride_permute_kernel(const TX* __restrict__ x, int64_t total, int64_t W, int64_t k, int64_t m,
                                      const TY* residual, TY* y) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = e / W, j = e - n * W, c = j / m, a = j - c * m;
    float v = to_float(x[n * W + a * k + c]);
    if (residual) v += to_float(residual[e]);  // residual may be y: read before the write
    store(y + e, v);
  }
}

template <class TX, class TY>
void launch(const Tensor& x, int64_t k, const Tensor& y, const Tensor& residual) {
  const int64_t total = y.numel(), W = y.size(1);
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535 * 8);
  stride_permute_kernel<TX, TY><<<(unsigned)blocks, threads, 0, cuda_stream()>>>(
      (const TX*)x.data, total, W, k, W / k, is_given(residual) ? (const TY*)residual.data : nullptr, (TY*)y.data);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void stride_permute_cuda(const Tensor& x, int64_t k, const Tensor& y, const Tensor& residual) {
  const char* op = "stride_permute";
  check_cuda_arg(op, "x", x, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = x.size(0), W = x.size(1);
  if (k < 1 || W % k != 0) fail(op, ": k = ", k, " does not divide the row width ", W, " (", x.str(), ")");
  check_cuda_arg(op, "y", y, {DType::bf16, DType::f32}, {N, W});
  if (is_given(residual)) {
    check_cuda_arg(op, "residual", residual, {y.dtype}, {N, W});
    check_residual_aliasing(op, y, residual);
  }
  if (x.dtype == DType::bf16) {
    if (y.dtype == DType::bf16) return launch<bf16, bf16>(x, k, y, residual);
    return launch<bf16, float>(x, k, y, residual);
  }
  if (y.dtype == DType::bf16) return launch<float, bf16>(x, k, y, residual);
  launch<float, float>(x, k, y, residual);
}

}  // namespace lingua
