#include <cblas.h>

#include <algorithm>

#include "lingua/core/profiler.h"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& residual) {
  LINGUA_PROFILE_SCOPE("linear_forward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return linear_forward_cuda(x, w, y, residual);
#endif
  const char* op = "linear_forward";
  check_f32(op, "x", x, {-1, -1});
  check_f32(op, "w", w, {-1, x.size(1)});
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  check_f32(op, "y", y, {N, out});
  const bool add = is_given(residual);
  if (add) {
    check_f32(op, "residual", residual, {N, out});
    check_residual_aliasing(op, y, residual);
  }
  if (N == 0 || out == 0) return;
  // With a separate residual, y starts as a copy of it and the product is accumulated (beta = 1).
  if (add && residual.data != y.data) std::copy_n(residual.f32(), N * out, y.f32());
  if (in == 0) {
    if (!add) std::fill_n(y.f32(), N * out, 0.0f);
    return;
  }
  // y[N, out] (+)= x[N, in] w[out, in]^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)in, 1.0f, x.f32(), (int)in, w.f32(),
              (int)in, add ? 1.0f : 0.0f, y.f32(), (int)out);
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                     bool accumulate_dx) {
  LINGUA_PROFILE_SCOPE("linear_backward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return linear_backward_cuda(x, w, dy, dx, dw, accumulate_dx);
#endif
  const char* op = "linear_backward";
  check_f32(op, "x", x, {-1, -1});
  check_f32(op, "w", w, {-1, x.size(1)});
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  check_f32(op, "dy", dy, {N, out});
  if (is_given(dx)) check_f32(op, "dx", dx, {N, in});
  if (is_given(dw)) check_f32(op, "dw", dw, {out, in});
  if (N == 0 || in == 0) return;

  if (is_given(dx)) {
    if (out == 0) {
      if (!accumulate_dx) std::fill_n(dx.f32(), N * in, 0.0f);
    } else {
      // dx[N, in] (+)= dy[N, out] w[out, in]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)out, 1.0f, dy.f32(), (int)out,
                  w.f32(), (int)in, accumulate_dx ? 1.0f : 0.0f, dx.f32(), (int)in);
    }
  }
  if (is_given(dw) && out > 0) {
    // dw[out, in] += dy[N, out]^T x[N, in]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)N, 1.0f, dy.f32(), (int)out, x.f32(),
                (int)in, 1.0f, dw.f32(), (int)in);
  }
}

}  // namespace lingua
