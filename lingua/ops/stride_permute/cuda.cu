// Stride permutation on the GPU. Each row is a [m, k] -> [k, m] transpose with one small side
// (a block count). A thread takes one index of the larger side and loops over the smaller one, so
// consecutive threads touch consecutive elements on both the read and the write side (one side
// contiguous per thread, the other coalesced across threads): no per-element division.
#include <algorithm>

#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/stride_permute/stride_permute.h"

namespace lingua {

namespace {

// Row blockIdx.y (+ gridDim.y * round), index t of the larger side: m >= k: t = a, else t = c.
template <class TX, class TY>
__global__ void stride_permute_kernel(const TX* __restrict__ x, int64_t rows, int k, int m, const TY* residual,
                                      TY* y) {
  const int W = k * m, large = max(k, m), small = min(k, m);
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= large) return;
  for (int64_t n = blockIdx.y; n < rows; n += gridDim.y) {
    const TX* xr = x + n * W;
    TY* yr = y + n * W;
    const TY* rr = residual ? residual + n * W : nullptr;
    for (int s = 0; s < small; ++s) {
      const int a = m >= k ? t : s, c = m >= k ? s : t;
      const int j = c * m + a;
      float v = to_f32(xr[a * k + c]);
      if (rr) v += to_f32(rr[j]);  // residual may be y: read before the write
      from_f32(v, yr + j);
    }
  }
}

template <class TX, class TY>
void launch(const Tensor& x, int64_t k, const Tensor& y, const Tensor& residual) {
  const int64_t rows = y.size(0), W = y.size(1);
  if (rows == 0 || W == 0) return;
  const int m = (int)(W / k), large = (int)std::max<int64_t>(k, m);
  const int threads = std::min(256, ((large + 31) / 32) * 32);
  const dim3 grid((unsigned)((large + threads - 1) / threads), (unsigned)std::min<int64_t>(rows, 65535));
  stride_permute_kernel<TX, TY><<<grid, threads, 0, cuda_stream()>>>(
      (const TX*)x.data, rows, (int)k, m, is_given(residual) ? (const TY*)residual.data : nullptr, (TY*)y.data);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void stride_permute_cuda(const Tensor& x, int64_t k, const Tensor& y, const Tensor& residual) {
  const char* op = "stride_permute";
  check_cuda_arg(op, "x", x, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = x.size(0), W = x.size(1);
  if (k < 1 || W % k != 0) fail(op, ": k = ", k, " does not divide the row width ", W, " (", x.str(), ")");
  if (W >= (int64_t(1) << 31)) fail(op, ": rows of ", W, " elements are too wide (", x.str(), ")");
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
