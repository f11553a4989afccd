#include "lingua/core/profiler.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/tail_scale/tail_scale.h"

namespace lingua {

void tail_scale(const Tensor& x, int64_t row_from, const float* row_scale, int64_t col_from, const float* col_scale,
                const Tensor& out, int64_t row_period, int64_t col_period) {
  LINGUA_PROFILE_SCOPE("tail_scale");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda)
    return tail_scale_cuda(x, row_from, row_scale, col_from, col_scale, out, row_period, col_period);
#endif
  const char* op = "tail_scale";
  check_f32(op, "x", x, {-1, -1});
  const int64_t R = x.size(0), C = x.size(1);
  check_f32(op, "out", out, {R, C});
  if (row_from < 0 || col_from < 0) fail(op, ": row_from ", row_from, " and col_from ", col_from, " must be >= 0");
  const int64_t P = row_period > 0 ? row_period : R, Q = col_period > 0 ? col_period : C;
  if (row_period < 0 || col_period < 0 || (R > 0 && R % P) || (C > 0 && C % Q))
    fail(op, ": row_period ", row_period, " and col_period ", col_period, " must divide the rows (", R,
         ") and columns (", C, ")");
  const float rs = row_scale ? *row_scale : 1.0f, cs = col_scale ? *col_scale : 1.0f;
  const float* xp = x.f32();
  float* yp = out.f32();
  for (int64_t r = 0; r < R; ++r) {
    const float f = r % P >= row_from ? rs : 1.0f;
    for (int64_t c = 0; c < C; ++c) yp[r * C + c] = xp[r * C + c] * (c % Q >= col_from ? f * cs : f);
  }
}

}  // namespace lingua
