// Transpose on the GPU: 32 x 32 tiles through shared memory (padded against bank conflicts), each
// block reading a tile row-wise from x and writing it row-wise to y.
#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/transpose/transpose.h"

namespace lingua {

namespace {

constexpr int kTile = 32, kRows = 8;  // a block: 32 x 8 threads, each moving 4 elements

template <class TX, class TY>
__global__ void transpose_kernel(const TX* __restrict__ x, TY* __restrict__ y, int64_t R, int64_t C) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t c0 = (int64_t)blockIdx.x * kTile, r0 = (int64_t)blockIdx.y * kTile;
  for (int i = threadIdx.y; i < kTile; i += kRows) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < R && c < C) tile[i][threadIdx.x] = to_f32(x[r * C + c]);
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += kRows) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;  // y row c, column r
    if (r < R && c < C) from_f32(tile[threadIdx.x][i], y + c * R + r);
  }
}

template <class TX, class TY>
void launch(const Tensor& x, const Tensor& y, int64_t R, int64_t C) {
  const dim3 grid((unsigned)((C + kTile - 1) / kTile), (unsigned)((R + kTile - 1) / kTile)), block(kTile, kRows);
  transpose_kernel<TX, TY><<<grid, block, 0, cuda_stream()>>>((const TX*)x.data, (TY*)y.data, R, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void transpose_cuda(const Tensor& x, const Tensor& y) {
  const char* op = "transpose";
  check_cuda_arg(op, "x", x, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t R = x.size(0), C = x.size(1);
  check_cuda_arg(op, "y", y, {DType::bf16, DType::f32}, {C, R});
  if (R == 0 || C == 0) return;
  if ((C + kTile - 1) / kTile > 0x7fffffff || (R + kTile - 1) / kTile > 65535)
    fail(op, ": x (", x.str(), ") has too many rows for one launch (at most ", 65535 * kTile, ")");
  const bool xb = x.dtype == DType::bf16, yb = y.dtype == DType::bf16;
  if (xb && yb) return launch<bf16, bf16>(x, y, R, C);
  if (xb) return launch<bf16, float>(x, y, R, C);
  if (yb) return launch<float, bf16>(x, y, R, C);
  launch<float, float>(x, y, R, C);
}

}  // namespace lingua
