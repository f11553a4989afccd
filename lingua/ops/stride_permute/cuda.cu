// Stride permutation on the GPU. Each row is a [m, k] -> [k, m] transpose with one small side
// (a block count). Where that side is 1-16 and 8 divides the other, a thread moves 8 x S
// elements with 16-byte accesses (stride_permute_vec_kernel); else a thread takes one index of the
// larger side and loops over the smaller one, so consecutive threads touch consecutive elements on
// both the read and the write side: no per-element division.
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

// Vector form, for a small side S (1-16) and a larger side that 8 divides, every pointer 16-byte
// aligned: a row is x [m, k] -> y [k, m]. A thread takes 8 consecutive indices of the larger side:
// S 16-byte loads and S 16-byte stores. k small (S = k): its x is 8S contiguous elements, and each
// output block c gets 8 contiguous ones. m small (S = m): the reverse.
template <class TX, class TY, int S, bool kSmall>
__global__ void stride_permute_vec_kernel(const TX* __restrict__ x, int64_t rows, int large, const TY* residual,
                                          TY* y) {
  const int64_t groups = large / 8, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * groups) return;
  const int64_t n = i / groups, W = (int64_t)large * S;
  const int l0 = (int)(i - n * groups) * 8;
  const TX* xr = x + n * W;
  TY* yr = y + n * W;
  const TY* rr = residual ? residual + n * W : nullptr;
  float in[S][8], out[S][8];
#pragma unroll
  for (int s = 0; s < S; ++s) load<8>(xr + (kSmall ? (int64_t)l0 * S + 8 * s : (int64_t)s * large + l0), in[s]);
  // kSmall: in holds x[a0 + t][c] at flat t*S + c, output block c takes t = 0..7.
  // m small: in[a][t] = x[a][c0 + t]; output y[c0 + t][a] sits at flat t*S + a from c0*m.
#pragma unroll
  for (int s = 0; s < S; ++s)
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int f = t * S + s;
      out[kSmall ? s : f / 8][kSmall ? t : f % 8] = kSmall ? in[f / 8][f % 8] : in[s][t];
    }
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int64_t j = kSmall ? (int64_t)s * large + l0 : (int64_t)l0 * S + 8 * s;
    if (rr) {
      float r[8];
      load<8>(rr + j, r);  // residual may be y: read before the write
#pragma unroll
      for (int t = 0; t < 8; ++t) out[s][t] += r[t];
    }
    store<8>(yr + j, out[s]);
  }
}

template <class TX, class TY>
void launch(const Tensor& x, int64_t k, const Tensor& y, const Tensor& residual) {
  const int64_t rows = y.size(0), W = y.size(1);
  if (rows == 0 || W == 0) return;
  const int m = (int)(W / k), large = (int)std::max<int64_t>(k, m), small = (int)std::min<int64_t>(k, m);
  const bool aligned = aligned16(x.data) && aligned16(y.data) && (!is_given(residual) || aligned16(residual.data));
  if (aligned && large % 8 == 0 && (small == 1 || small == 2 || small == 4 || small == 8 || small == 16)) {
    const int64_t threads = rows * (large / 8);
    const int block = 256;
    const unsigned grid = (unsigned)((threads + block - 1) / block);
    const TX* xp = (const TX*)x.data;
    const TY* rp = is_given(residual) ? (const TY*)residual.data : nullptr;
    TY* yp = (TY*)y.data;
    const bool k_small = k == small;
#define LINGUA_PERMUTE_VEC(S)                                                                              \
  if (small == S) {                                                                                        \
    if (k_small)                                                                                           \
      stride_permute_vec_kernel<TX, TY, S, true><<<grid, block, 0, cuda_stream()>>>(xp, rows, large, rp, yp);  \
    else                                                                                                   \
      stride_permute_vec_kernel<TX, TY, S, false><<<grid, block, 0, cuda_stream()>>>(xp, rows, large, rp, yp); \
  }
    LINGUA_PERMUTE_VEC(1) else LINGUA_PERMUTE_VEC(2) else LINGUA_PERMUTE_VEC(4) else LINGUA_PERMUTE_VEC(8) else LINGUA_PERMUTE_VEC(16)
#undef LINGUA_PERMUTE_VEC
    CUDA_CHECK_LAUNCH();
    return;
  }
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
