#include <cmath>

#include "lingua/core/profiler.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {

namespace {
// exp(-a) overflows to inf for very negative a, giving sigmoid 0 (not NaN).
inline float sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }
}  // namespace

void swiglu_forward(const Tensor& a, const Tensor& b, const Tensor& out) {
  LINGUA_PROFILE_SCOPE("swiglu_forward");
#ifdef LINGUA_CUDA
  if (a.device == Device::cuda) return swiglu_forward_cuda(a, b, out);
#endif
  const char* op = "swiglu_forward";
  check_f32(op, "a", a, {-1, -1});
  const int64_t N = a.size(0), H = a.size(1);
  check_f32(op, "b", b, {N, H});
  check_f32(op, "out", out, {N, H});
  const float* as = a.f32();
  const float* bs = b.f32();
  float* ys = out.f32();
  const int64_t n = N * H;
#pragma omp parallel for schedule(static) if (n > kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) ys[i] = as[i] * sigmoid(as[i]) * bs[i];
}

// d silu(a) / da = s + a s (1 - s),  s = sigmoid(a)
void swiglu_backward(const Tensor& a, const Tensor& b, const Tensor& dout, const Tensor& da, const Tensor& db,
                     const Tensor& out) {
  LINGUA_PROFILE_SCOPE("swiglu_backward");
#ifdef LINGUA_CUDA
  if (a.device == Device::cuda) return swiglu_backward_cuda(a, b, dout, da, db, out);
#endif
  const char* op = "swiglu_backward";
  check_f32(op, "a", a, {-1, -1});
  const int64_t N = a.size(0), H = a.size(1);
  check_f32(op, "b", b, {N, H});
  check_f32(op, "dout", dout, {N, H});
  check_f32(op, "da", da, {N, H});
  check_f32(op, "db", db, {N, H});
  if (is_given(out)) check_f32(op, "out", out, {N, H});
  const float* as = a.f32();
  const float* bs = b.f32();
  const float* dys = dout.f32();
  float* das = da.f32();
  float* dbs = db.f32();
  float* outs = is_given(out) ? out.f32() : nullptr;
  const int64_t n = N * H;
#pragma omp parallel for schedule(static) if (n > kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float x = as[i], bi = bs[i], s = sigmoid(x), dy = dys[i];
    das[i] = dy * bi * (s + x * s * (1.0f - s));
    dbs[i] = dy * x * s;
    if (outs) outs[i] = x * s * bi;
  }
}

}  // namespace lingua
