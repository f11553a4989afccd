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

namespace {
void check_packed(const char* op, const Tensor& ab, const Tensor& out_like, int64_t* N, int64_t* H) {
  LINGUA_CHECK(ab.ndim == 2 && ab.size(1) % 2 == 0, op, ": ab must be [N, 2H], got ", ab.str());
  *N = ab.size(0);
  *H = ab.size(1) / 2;
  check_shape(op, "out", out_like, {*N, *H});
}
}  // namespace

void swiglu_forward_packed(const Tensor& ab, const Tensor& out) {
  LINGUA_PROFILE_SCOPE("swiglu_forward");
#ifdef LINGUA_CUDA
  if (ab.device == Device::cuda) return swiglu_forward_packed_cuda(ab, out);
#endif
  const char* op = "swiglu_forward_packed";
  int64_t N, H;
  check_packed(op, ab, out, &N, &H);
  check_f32(op, "ab", ab, {N, 2 * H});
  check_f32(op, "out", out, {N, H});
  const float* p = ab.f32();
  float* ys = out.f32();
#pragma omp parallel for schedule(static) if (N * H > kMinParallelElements)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      const float a = p[n * 2 * H + j], b = p[n * 2 * H + H + j];
      ys[n * H + j] = a * sigmoid(a) * b;
    }
}

void swiglu_backward_packed(const Tensor& ab, const Tensor& dout, const Tensor& dab, const Tensor& out) {
  LINGUA_PROFILE_SCOPE("swiglu_backward");
#ifdef LINGUA_CUDA
  if (ab.device == Device::cuda) return swiglu_backward_packed_cuda(ab, dout, dab, out);
#endif
  const char* op = "swiglu_backward_packed";
  int64_t N, H;
  check_packed(op, ab, dout, &N, &H);
  check_f32(op, "ab", ab, {N, 2 * H});
  check_f32(op, "dout", dout, {N, H});
  check_f32(op, "dab", dab, {N, 2 * H});
  if (is_given(out)) check_f32(op, "out", out, {N, H});
  const float* p = ab.f32();
  const float* dys = dout.f32();
  float* dp = dab.f32();
  float* outs = is_given(out) ? out.f32() : nullptr;
#pragma omp parallel for schedule(static) if (N * H > kMinParallelElements)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      const int64_t ia = n * 2 * H + j, ib = ia + H, io = n * H + j;
      const float x = p[ia], bi = p[ib], s = sigmoid(x), dy = dys[io];
      dp[ia] = dy * bi * (s + x * s * (1.0f - s));
      dp[ib] = dy * x * s;
      if (outs) outs[io] = x * s * bi;
    }
}

}  // namespace lingua
