#include "lingua/core/profiler.h"
#include "lingua/ops/guide_mix/guide_mix.h"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

void guide_mix_forward(const Tensor& s, const Tensor& w, const float* alpha, const Tensor& y, const Tensor& residual) {
  LINGUA_PROFILE_SCOPE("guide_mix_forward");
#ifdef LINGUA_CUDA
  if (s.device == Device::cuda) return guide_mix_forward_cuda(s, w, alpha, y, residual);
#endif
  const char* op = "guide_mix_forward";
  check_f32(op, "s", s, {-1, -1});
  const int64_t N = s.size(0), W = s.size(1);
  check_f32(op, "w", w, {N, W});
  check_f32(op, "y", y, {N, W});
  const bool add = is_given(residual);
  if (add) {
    check_f32(op, "residual", residual, {N, W});
    check_residual_aliasing(op, y, residual);
  }
  if (!alpha) fail(op, ": no alpha");
  const float a = *alpha, b = 1.0f - a;
  const float *sp = s.f32(), *wp = w.f32(), *rp = add ? residual.f32() : nullptr;
  float* yp = y.f32();
  for (int64_t i = 0; i < N * W; ++i) {
    const float v = a * wp[i] + b * sp[i];
    yp[i] = rp ? rp[i] + v : v;
  }
}

void guide_mix_backward(const Tensor& dy, const float* alpha, const Tensor& ds, const Tensor& dw) {
  LINGUA_PROFILE_SCOPE("guide_mix_backward");
#ifdef LINGUA_CUDA
  if (dy.device == Device::cuda) return guide_mix_backward_cuda(dy, alpha, ds, dw);
#endif
  const char* op = "guide_mix_backward";
  check_f32(op, "dy", dy, {-1, -1});
  const int64_t N = dy.size(0), W = dy.size(1);
  check_f32(op, "ds", ds, {N, W});
  check_f32(op, "dw", dw, {N, W});
  if (!alpha) fail(op, ": no alpha");
  if (ds.data == dw.data && N * W > 0) fail(op, ": ds and dw are the same memory");
  const float a = *alpha, b = 1.0f - a;
  const float* g = dy.f32();
  float *sp = ds.f32(), *wp = dw.f32();
  for (int64_t i = 0; i < N * W; ++i) {
    const float v = g[i];  // ds or dw may be dy
    sp[i] = b * v;
    wp[i] = a * v;
  }
}

}  // namespace lingua
