#include <cmath>

#include "lingua/core/profiler.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {

namespace {
// exp(-a) overflows to inf for very negative a, giving sigmoid 0 (not NaN).
inline float sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }

// Both layouts: a, b (and da, db) rows at stride ld (H: separate tensors; 2H: packed, b = a + H);
// dout and out contiguous [N, H].
void forward_rows(const float* a, const float* b, int64_t ld, float* out, int64_t N, int64_t H) {
#pragma omp parallel for schedule(static) if (N * H > kMinParallelElements)
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < H; ++j) {
      const float x = a[r * ld + j];
      out[r * H + j] = x * sigmoid(x) * b[r * ld + j];
    }
}

// d silu(a) / da = s + a s (1 - s),  s = sigmoid(a)
void backward_rows(const float* a, const float* b, int64_t ld, const float* dout, float* da, float* db, float* out,
                   int64_t N, int64_t H) {
#pragma omp parallel for schedule(static) if (N * H > kMinParallelElements)
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < H; ++j) {
      const int64_t o = r * ld + j, i = r * H + j;
      const float x = a[o], bi = b[o], s = sigmoid(x), dy = dout[i];
      da[o] = dy * bi * (s + x * s * (1.0f - s));
      db[o] = dy * x * s;
      if (out) out[i] = x * s * bi;
    }
}
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
  forward_rows(a.f32(), b.f32(), H, out.f32(), N, H);
}

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
  backward_rows(a.f32(), b.f32(), H, dout.f32(), da.f32(), db.f32(), is_given(out) ? out.f32() : nullptr, N, H);
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
  forward_rows(ab.f32(), ab.f32() + H, 2 * H, out.f32(), N, H);
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
  backward_rows(ab.f32(), ab.f32() + H, 2 * H, dout.f32(), dab.f32(), dab.f32() + H,
                is_given(out) ? out.f32() : nullptr, N, H);
}

namespace {
void check_shuffled(const char* op, const Tensor& v, int64_t k, const Tensor& out_like, int64_t* N, int64_t* H) {
  LINGUA_CHECK(v.ndim == 2 && v.size(1) % 2 == 0, op, ": v must be [N, 2H], got ", v.str());
  *N = v.size(0);
  *H = v.size(1) / 2;
  LINGUA_CHECK(k >= 1 && *H % k == 0, op, ": the shuffle's block count k = ", k, " must divide H = ", *H);
  check_shape(op, "out", out_like, {*N, *H});
}
}  // namespace

void swiglu_forward_shuffled(const Tensor& v, int64_t k, const Tensor& out) {
  LINGUA_PROFILE_SCOPE("swiglu_forward");
#ifdef LINGUA_CUDA
  if (v.device == Device::cuda) return swiglu_forward_shuffled_cuda(v, k, out);
#endif
  const char* op = "swiglu_forward_shuffled";
  int64_t N, H;
  check_shuffled(op, v, k, out, &N, &H);
  check_f32(op, "v", v, {N, 2 * H});
  check_f32(op, "out", out, {N, H});
  const int64_t m = 2 * H / k;
  const float* vp = v.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static) if (N * H > kMinParallelElements)
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < H; ++j) {
      const float* row = vp + r * 2 * H;
      const float x = row[(j % k) * m + j / k], b = row[((H + j) % k) * m + (H + j) / k];
      o[r * H + j] = x * sigmoid(x) * b;
    }
}

void swiglu_backward_shuffled(const Tensor& v, int64_t k, const Tensor& dout, const Tensor& dv, const Tensor& out) {
  LINGUA_PROFILE_SCOPE("swiglu_backward");
#ifdef LINGUA_CUDA
  if (v.device == Device::cuda) return swiglu_backward_shuffled_cuda(v, k, dout, dv, out);
#endif
  const char* op = "swiglu_backward_shuffled";
  int64_t N, H;
  check_shuffled(op, v, k, dout, &N, &H);
  check_f32(op, "v", v, {N, 2 * H});
  check_f32(op, "dout", dout, {N, H});
  check_f32(op, "dv", dv, {N, 2 * H});
  if (is_given(out)) check_f32(op, "out", out, {N, H});
  const int64_t m = 2 * H / k;
  const float* vp = v.f32();
  const float* g = dout.f32();
  float* d = dv.f32();
  float* o = is_given(out) ? out.f32() : nullptr;
#pragma omp parallel for schedule(static) if (N * H > kMinParallelElements)
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < H; ++j) {  // each position of v (and dv) belongs to one j: read, then write
      const int64_t pa = r * 2 * H + (j % k) * m + j / k, pb = r * 2 * H + ((H + j) % k) * m + (H + j) / k;
      const float x = vp[pa], bj = vp[pb], s = sigmoid(x), dy = g[r * H + j];
      d[pa] = dy * bj * (s + x * s * (1.0f - s));
      d[pb] = dy * x * s;
      if (o) o[r * H + j] = x * s * bj;
    }
}

}  // namespace lingua
