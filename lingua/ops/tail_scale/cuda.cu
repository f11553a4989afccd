// Tail scaling on the GPU: one grid-stride pass; the factors are read from device memory by every
// thread (cached loads), never by the host.
#include <algorithm>

#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/tail_scale/tail_scale.h"

namespace lingua {

namespace {

template <class TX, class TY>
__global__ void tail_scale_kernel(const TX* x, int64_t R, int64_t C, int64_t P, int64_t Q, int64_t row_from,
                                  const float* row_scale, int64_t col_from, const float* col_scale, TY* y) {
  const float rs = row_scale ? *row_scale : 1.0f, cs = col_scale ? *col_scale : 1.0f;
  const int64_t n = R * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / C, c = i - r * C;
    float f = r % P >= row_from ? rs : 1.0f;
    if (c % Q >= col_from) f *= cs;
    from_f32(to_f32(x[i]) * f, y + i);
  }
}

template <class TX, class TY>
void launch(const Tensor& x, int64_t P, int64_t Q, int64_t row_from, const float* rs, int64_t col_from, const float* cs,
            const Tensor& y) {
  const int64_t R = x.size(0), C = x.size(1), n = R * C;
  if (n == 0) return;
  const unsigned blocks = (unsigned)std::min<int64_t>((n + 255) / 256, 65535 * 4);
  tail_scale_kernel<TX, TY><<<blocks, 256, 0, cuda_stream()>>>((const TX*)x.data, R, C, P, Q, row_from, rs, col_from,
                                                               cs, (TY*)y.data);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void tail_scale_cuda(const Tensor& x, int64_t row_from, const float* row_scale, int64_t col_from,
                     const float* col_scale, const Tensor& out, int64_t row_period, int64_t col_period) {
  const char* op = "tail_scale";
  check_cuda_arg(op, "x", x, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t R = x.size(0), C = x.size(1);
  check_cuda_arg(op, "out", out, {DType::bf16, DType::f32}, {R, C});
  if (row_from < 0 || col_from < 0) fail(op, ": row_from ", row_from, " and col_from ", col_from, " must be >= 0");
  if (x.data == out.data && x.dtype != out.dtype) fail(op, ": out is x in place but their dtypes differ");
  const int64_t P = row_period > 0 ? row_period : std::max<int64_t>(R, 1),
                Q = col_period > 0 ? col_period : std::max<int64_t>(C, 1);
  if (row_period < 0 || col_period < 0 || R % P || C % Q)
    fail(op, ": row_period ", row_period, " and col_period ", col_period, " must divide the rows (", R,
         ") and columns (", C, ")");
  if (x.dtype == DType::bf16) {
    if (out.dtype == DType::bf16) return launch<bf16, bf16>(x, P, Q, row_from, row_scale, col_from, col_scale, out);
    return launch<bf16, float>(x, P, Q, row_from, row_scale, col_from, col_scale, out);
  }
  if (out.dtype == DType::bf16) return launch<float, bf16>(x, P, Q, row_from, row_scale, col_from, col_scale, out);
  launch<float, float>(x, P, Q, row_from, row_scale, col_from, col_scale, out);
}

}  // namespace lingua
