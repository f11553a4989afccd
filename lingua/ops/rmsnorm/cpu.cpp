#include <algorithm>
#include <cmath>
#include <vector>

#include "lingua/core/profiler.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"

namespace lingua {

namespace {

// Whether the byte ranges of a and b intersect.
bool overlaps(const Tensor& a, const Tensor& b) {
  const char* pa = static_cast<const char*>(a.data);
  const char* pb = static_cast<const char*>(b.data);
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

}  // namespace

// Row sums are taken in double (sequentially, so deterministic); the stored rstd is fp32.

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd) {
  LINGUA_PROFILE_SCOPE("rmsnorm_forward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return rmsnorm_forward_cuda(x, w, eps, y, rstd);
#endif
  const char* op = "rmsnorm_forward";
  check_f32(op, "x", x, {-1, -1});
  const int64_t N = x.size(0), D = x.size(1);
  check_f32(op, "w", w, {D});
  check_f32(op, "y", y, {N, D});
  check_f32(op, "rstd", rstd, {N});
  LINGUA_CHECK(D > 0, op, ": rows of x are empty (", x.str(), ")");
  const float* xs = x.f32();
  const float* ws = w.f32();
  float* ys = y.f32();
  float* rs = rstd.f32();
#pragma omp parallel for schedule(static) if (N * D > kMinParallelElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = xs + n * D;
    double ss = 0;
    for (int64_t j = 0; j < D; ++j) ss += (double)xr[j] * xr[j];
    const float r = (float)(1.0 / std::sqrt(ss / D + (double)eps));
    rs[n] = r;
    float* yr = ys + n * D;
    for (int64_t j = 0; j < D; ++j) yr[j] = xr[j] * r * ws[j];
  }
}

// y_j = x_j r w_j,  r = (mean(x^2) + eps)^-1/2,  dr/dx_j = -r^3 x_j / D
//   dx_j = r w_j dy_j - x_j r^3 / D * sum_k dy_k w_k x_k
//   dw_j += sum_n dy_nj x_nj r_n
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                      const Tensor& dw, bool accumulate_dx, const Tensor& dx_copy) {
  LINGUA_PROFILE_SCOPE("rmsnorm_backward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return rmsnorm_backward_cuda(x, w, rstd, dy, dx, dw, accumulate_dx, dx_copy);
#endif
  const char* op = "rmsnorm_backward";
  check_f32(op, "x", x, {-1, -1});
  const int64_t N = x.size(0), D = x.size(1);
  check_f32(op, "w", w, {D});
  check_f32(op, "rstd", rstd, {N});
  check_f32(op, "dy", dy, {N, D});
  check_f32(op, "dx", dx, {N, D});
  check_f32(op, "dw", dw, {D});
  const bool copy = is_given(dx_copy);
  if (copy) {
    check_f32(op, "dx_copy", dx_copy, {N, D});
    LINGUA_CHECK(!overlaps(dx_copy, x), op, ": argument 'dx_copy' must not alias x");
    LINGUA_CHECK(!overlaps(dx_copy, dy), op, ": argument 'dx_copy' must not alias dy");
    LINGUA_CHECK(!overlaps(dx_copy, dx), op, ": argument 'dx_copy' must not alias dx");
  }
  const float* xs = x.f32();
  const float* ws = w.f32();
  const float* rs = rstd.f32();
  const float* dys = dy.f32();
  float* dxs = dx.f32();
  float* dws = dw.f32();
  float* dcs = copy ? dx_copy.f32() : nullptr;

  // dw first, so that dx may alias dy. Threads own column blocks and sum the rows in order
  // (deterministic for any thread count).
  constexpr int64_t kCols = 64;
  const int64_t blocks = (D + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (N * D > kMinParallelElements)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t j0 = blk * kCols, j1 = std::min(D, j0 + kCols);
    double acc[kCols] = {};
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = xs + n * D;
      const float* dyr = dys + n * D;
      const float r = rs[n];
      for (int64_t j = j0; j < j1; ++j) acc[j - j0] += (double)(dyr[j] * xr[j] * r);
    }
    for (int64_t j = j0; j < j1; ++j) dws[j] += (float)acc[j - j0];
  }

#pragma omp parallel for schedule(static) if (N * D > kMinParallelElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = xs + n * D;
    const float* dyr = dys + n * D;
    float* dxr = dxs + n * D;
    double dot = 0;
    for (int64_t j = 0; j < D; ++j) dot += (double)dyr[j] * ws[j] * xr[j];
    const float r = rs[n];
    const float c = (float)(dot * r * r * r / D);
    for (int64_t j = 0; j < D; ++j) {
      const float g = r * ws[j] * dyr[j] - xr[j] * c;
      dxr[j] = accumulate_dx ? dxr[j] + g : g;
    }
    if (dcs) std::copy(dxr, dxr + D, dcs + n * D);
  }
}

}  // namespace lingua
