#include "lingua/core/profiler.h"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/stride_permute/stride_permute.h"

namespace lingua {

void stride_permute(const Tensor& x, int64_t k, const Tensor& y, const Tensor& residual) {
  LINGUA_PROFILE_SCOPE("stride_permute");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return stride_permute_cuda(x, k, y, residual);
#endif
  const char* op = "stride_permute";
  check_f32(op, "x", x, {-1, -1});
  const int64_t N = x.size(0), W = x.size(1);
  if (k < 1 || W % k != 0) fail(op, ": k = ", k, " does not divide the row width ", W, " (", x.str(), ")");
  check_f32(op, "y", y, {N, W});
  const bool add = is_given(residual);
  if (add) {
    check_f32(op, "residual", residual, {N, W});
    check_residual_aliasing(op, y, residual);
  }
  const int64_t m = W / k;
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x.f32() + n * W;
    float* yr = y.f32() + n * W;
    const float* rr = add ? residual.f32() + n * W : nullptr;
    for (int64_t c = 0; c < k; ++c)
      for (int64_t a = 0; a < m; ++a) {
        const int64_t j = c * m + a;
        yr[j] = add ? rr[j] + xr[a * k + c] : xr[a * k + c];
      }
  }
}

}  // namespace lingua
