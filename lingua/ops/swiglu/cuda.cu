// SwiGLU on CUDA: elementwise over the flattened [N * H] tensors, 8 elements per thread, loaded
// 16 bytes wide (bf16: one access, f32: two) when every pointer is 16-byte aligned; the last
// partial chunk, or every chunk of misaligned tensors, element by element. fp32 math.
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {

namespace {

// As the CPU: expf(-a) overflows to inf for very negative a, giving 0 (not NaN).
__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

constexpr int kThreads = 256;

// a and b are read at row stride ld: element i = r H + j at r ld + j (ld == H: the separate,
// contiguous tensors; ld == 2H with b = a + H: the packed [N, 2H] form). dout and out are
// contiguous [N, H]; da and db have a's and b's layout. Vector path when 8 elements never straddle
// a gap between rows (ld == H or H % 8 == 0) and every pointer is 16-byte aligned.
// Outputs are not __restrict__: they may alias inputs (every element is read before it is written,
// by the same thread).
__device__ __forceinline__ int64_t strided(int64_t i, int64_t H, int64_t ld) {
  if (ld == H) return i;
  const int64_t r = i / H;
  return r * ld + (i - r * H);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(const T* a, const T* b, int64_t ld, T* out, int64_t n, int64_t H, bool vec) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i >= n) return;
  if (vec && i + 8 <= n) {
    const int64_t o = strided(i, H, ld);
    float av[8], bv[8], y[8];
    load<8>(a + o, av);
    load<8>(b + o, bv);
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = av[k] * sigmoid(av[k]) * bv[k];
    store<8>(out + i, y);
  } else {
    for (int64_t e = i; e < n && e < i + 8; ++e) {
      const int64_t o = strided(e, H, ld);
      const float x = to_f32(a[o]);
      from_f32(x * sigmoid(x) * to_f32(b[o]), out + e);
    }
  }
}

// d silu(a) / da = s + a s (1 - s),  s = sigmoid(a)
template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(const T* a, const T* b, int64_t ld, const T* dout, T* da, T* db, T* out, int64_t n,
                           int64_t H, bool vec) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i >= n) return;
  if (vec && i + 8 <= n) {
    const int64_t o = strided(i, H, ld);
    float av[8], bv[8], gv[8], dav[8], dbv[8], ov[8];
    load<8>(a + o, av);
    load<8>(b + o, bv);
    load<8>(dout + i, gv);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float x = av[k], s = sigmoid(x), dy = gv[k];
      dav[k] = dy * bv[k] * (s + x * s * (1.0f - s));
      dbv[k] = dy * x * s;
      ov[k] = x * s * bv[k];
    }
    store<8>(da + o, dav);
    store<8>(db + o, dbv);
    if (out) store<8>(out + i, ov);
  } else {
    for (int64_t e = i; e < n && e < i + 8; ++e) {
      const int64_t o = strided(e, H, ld);
      const float x = to_f32(a[o]), bj = to_f32(b[o]), dy = to_f32(dout[e]), s = sigmoid(x);
      from_f32(dy * bj * (s + x * s * (1.0f - s)), da + o);
      from_f32(dy * x * s, db + o);
      if (out) from_f32(x * s * bj, out + e);
    }
  }
}

// Shuffled packed form: thread (r, g), g in [0, H/k), makes out[r, g*k + c] for c in [0, k). Gate
// element g*k + c sits at v[r, c*m + g] and its partner H + g*k + c at v[r, c*m + H/k + g] (m =
// 2H/k, k divides H), so a warp's reads of one c are consecutive; its writes cover 32k consecutive
// outputs. Each v / dv position belongs to one thread, which reads it before writing it.
template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_shuffled_kernel(const T* v, T* out, int64_t N, int64_t H, int64_t k) {
  const int64_t G = H / k, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * G) return;
  const int64_t r = i / G, g = i - r * G, m = 2 * H / k;
  const T* a = v + r * 2 * H + g;
  T* o = out + r * H + g * k;
  for (int64_t c = 0; c < k; ++c) {
    const float x = to_f32(a[c * m]), b = to_f32(a[c * m + G]);
    from_f32(x * sigmoid(x) * b, o + c);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_shuffled_kernel(const T* v, const T* dout, T* dv, T* out, int64_t N, int64_t H, int64_t k) {
  const int64_t G = H / k, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * G) return;
  const int64_t r = i / G, g = i - r * G, m = 2 * H / k, base = r * 2 * H + g, j0 = r * H + g * k;
  for (int64_t c = 0; c < k; ++c) {
    const int64_t pa = base + c * m, pb = pa + G;
    const float x = to_f32(v[pa]), bj = to_f32(v[pb]), dy = to_f32(dout[j0 + c]), s = sigmoid(x);
    from_f32(dy * bj * (s + x * s * (1.0f - s)), dv + pa);
    from_f32(dy * x * s, dv + pb);
    if (out) from_f32(x * s * bj, out + j0 + c);
  }
}

// Vector shuffled form, K = k in {1, 2, 4, 8}, 8 dividing G = H / k, pointers 16-byte aligned:
// thread (r, g0) takes g0 .. g0 + 7 of every block c (two 16-byte loads per c) and makes the 8K
// consecutive outputs from g0 * K (K 16-byte stores). Every input is loaded before any output is
// stored (outputs may alias inputs; each position has one thread).
template <class T, int K>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_shuffled_vec_kernel(const T* v, T* out, int64_t N, int64_t H) {
  const int64_t G = H / K, groups = G / 8, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * groups) return;
  const int64_t r = i / groups, g0 = (i - r * groups) * 8, m = 2 * H / K;
  const T* a = v + r * 2 * H + g0;
  float y[K][8];
#pragma unroll
  for (int c = 0; c < K; ++c) {
    float x[8], b[8];
    load<8>(a + c * m, x);
    load<8>(a + c * m + G, b);
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int f = t * K + c;  // output g0 * K + f
      y[f / 8][f % 8] = x[t] * sigmoid(x[t]) * b[t];
    }
  }
  T* o = out + r * H + g0 * K;
#pragma unroll
  for (int s = 0; s < K; ++s) store<8>(o + 8 * s, y[s]);
}

template <class T, int K>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_shuffled_vec_kernel(const T* v, const T* dout, T* dv, T* out, int64_t N, int64_t H) {
  const int64_t G = H / K, groups = G / 8, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N * groups) return;
  const int64_t r = i / groups, g0 = (i - r * groups) * 8, m = 2 * H / K, base = r * 2 * H + g0;
  const int64_t j0 = r * H + g0 * K;
  float dy[K][8], x[K][8], b[K][8];
#pragma unroll
  for (int s = 0; s < K; ++s) load<8>(dout + j0 + 8 * s, dy[s]);
#pragma unroll
  for (int c = 0; c < K; ++c) {
    load<8>(v + base + c * m, x[c]);
    load<8>(v + base + c * m + G, b[c]);
  }
  float y[K][8];
#pragma unroll
  for (int c = 0; c < K; ++c) {
    float da[8], db[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int f = t * K + c;
      const float xv = x[c][t], s = sigmoid(xv), g = dy[f / 8][f % 8];
      da[t] = g * b[c][t] * (s + xv * s * (1.0f - s));
      db[t] = g * xv * s;
      y[f / 8][f % 8] = xv * s * b[c][t];
    }
    store<8>(dv + base + c * m, da);
    store<8>(dv + base + c * m + G, db);
  }
  if (out)
#pragma unroll
    for (int s = 0; s < K; ++s) store<8>(out + j0 + 8 * s, y[s]);
}

void check_same_dtype(const char* op, const Tensor& a, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (auto [name, t] : ts)
    LINGUA_CHECK(t->dtype == a.dtype, op, ": argument '", name, "' has dtype ", dtype_name(t->dtype),
                 ", expected a's dtype ", dtype_name(a.dtype));
}

int blocks_for(int64_t n) { return ceil_div(n, 8LL * kThreads); }


// One launcher for both layouts: a, b (and da, db) at row stride ld; dtype from a.
void launch_forward(const Tensor& a, const void* b, int64_t ld, const Tensor& out, int64_t N, int64_t H) {
  const int64_t n = N * H;
  if (n == 0) return;
  const bool vec = (ld == H || H % 8 == 0) && aligned16(a.data) && aligned16(b) && aligned16(out.data);
  if (a.dtype == DType::bf16)
    swiglu_forward_kernel<bf16><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(a.data), static_cast<const bf16*>(b), ld, static_cast<bf16*>(out.data), n, H, vec);
  else
    swiglu_forward_kernel<float><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        a.f32(), static_cast<const float*>(b), ld, out.f32(), n, H, vec);
  CUDA_CHECK_LAUNCH();
}

void launch_backward(const Tensor& a, const void* b, int64_t ld, const Tensor& dout, const Tensor& da, void* db,
                     const Tensor& out, int64_t N, int64_t H) {
  const int64_t n = N * H;
  if (n == 0) return;
  const bool with_out = is_given(out);
  const bool vec = (ld == H || H % 8 == 0) && aligned16(a.data) && aligned16(b) && aligned16(dout.data) &&
                   aligned16(da.data) && aligned16(db) && (!with_out || aligned16(out.data));
  if (a.dtype == DType::bf16)
    swiglu_backward_kernel<bf16><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(a.data), static_cast<const bf16*>(b), ld, static_cast<const bf16*>(dout.data),
        static_cast<bf16*>(da.data), static_cast<bf16*>(db), with_out ? static_cast<bf16*>(out.data) : nullptr, n, H,
        vec);
  else
    swiglu_backward_kernel<float><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        a.f32(), static_cast<const float*>(b), ld, dout.f32(), da.f32(), static_cast<float*>(db),
        with_out ? out.f32() : nullptr, n, H, vec);
  CUDA_CHECK_LAUNCH();
}

void check_packed_cuda(const char* op, const Tensor& ab, const Tensor& other, const char* other_name, int64_t* N,
                       int64_t* H) {
  check_cuda_arg(op, "ab", ab, {DType::bf16, DType::f32}, {-1, -1});
  LINGUA_CHECK(ab.size(1) % 2 == 0, op, ": ab must be [N, 2H], got ", ab.str());
  *N = ab.size(0);
  *H = ab.size(1) / 2;
  check_cuda_arg(op, other_name, other, {ab.dtype}, {*N, *H});
}

// The second half of each packed row.
const void* second_half(const Tensor& ab, int64_t H) {
  return static_cast<const char*>(ab.data) + H * dtype_size(ab.dtype);
}

}  // namespace

void swiglu_forward_cuda(const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* op = "swiglu_forward";
  check_cuda_arg(op, "a", a, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = a.size(0), H = a.size(1);
  check_cuda_arg(op, "b", b, {DType::bf16, DType::f32}, {N, H});
  check_cuda_arg(op, "out", out, {DType::bf16, DType::f32}, {N, H});
  check_same_dtype(op, a, {{"b", &b}, {"out", &out}});
  launch_forward(a, b.data, H, out, N, H);
}

void swiglu_backward_cuda(const Tensor& a, const Tensor& b, const Tensor& dout, const Tensor& da, const Tensor& db,
                          const Tensor& out) {
  const char* op = "swiglu_backward";
  check_cuda_arg(op, "a", a, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = a.size(0), H = a.size(1);
  check_cuda_arg(op, "b", b, {DType::bf16, DType::f32}, {N, H});
  check_cuda_arg(op, "dout", dout, {DType::bf16, DType::f32}, {N, H});
  check_cuda_arg(op, "da", da, {DType::bf16, DType::f32}, {N, H});
  check_cuda_arg(op, "db", db, {DType::bf16, DType::f32}, {N, H});
  check_same_dtype(op, a, {{"b", &b}, {"dout", &dout}, {"da", &da}, {"db", &db}});
  if (is_given(out)) {
    check_cuda_arg(op, "out", out, {DType::bf16, DType::f32}, {N, H});
    check_same_dtype(op, a, {{"out", &out}});
  }
  launch_backward(a, b.data, H, dout, da, db.data, out, N, H);
}

void swiglu_forward_packed_cuda(const Tensor& ab, const Tensor& out) {
  int64_t N, H;
  check_packed_cuda("swiglu_forward_packed", ab, out, "out", &N, &H);
  launch_forward(ab, second_half(ab, H), 2 * H, out, N, H);
}

void swiglu_backward_packed_cuda(const Tensor& ab, const Tensor& dout, const Tensor& dab, const Tensor& out) {
  const char* op = "swiglu_backward_packed";
  int64_t N, H;
  check_packed_cuda(op, ab, dout, "dout", &N, &H);
  check_cuda_arg(op, "dab", dab, {ab.dtype}, {N, 2 * H});
  if (is_given(out)) check_cuda_arg(op, "out", out, {ab.dtype}, {N, H});
  launch_backward(ab, second_half(ab, H), 2 * H, dout, dab, const_cast<void*>(second_half(dab, H)), out, N, H);
}

namespace {
void check_shuffled_cuda(const char* op, const Tensor& v, int64_t k, const Tensor& other, const char* other_name,
                         int64_t* N, int64_t* H) {
  check_cuda_arg(op, "v", v, {DType::bf16, DType::f32}, {-1, -1});
  LINGUA_CHECK(v.size(1) % 2 == 0, op, ": v must be [N, 2H], got ", v.str());
  *N = v.size(0);
  *H = v.size(1) / 2;
  LINGUA_CHECK(k >= 1 && *H % k == 0, op, ": the shuffle's block count k = ", k, " must divide H = ", *H);
  check_cuda_arg(op, other_name, other, {v.dtype}, {*N, *H});
}
// The vector kernels' conditions: k a template instance, 8 | H / k, every pointer aligned.
bool shuffled_vec_ok(int64_t k, int64_t H, std::initializer_list<const void*> ptrs) {
  if ((k != 1 && k != 2 && k != 4 && k != 8) || (H / k) % 8 != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return false;
  return true;
}
// f(std::integral_constant<int, k>) for k in {1, 2, 4, 8}.
template <class F>
void with_k(int64_t k, F&& f) {
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>());
    case 2: return f(std::integral_constant<int, 2>());
    case 4: return f(std::integral_constant<int, 4>());
    default: return f(std::integral_constant<int, 8>());
  }
}
}  // namespace

void swiglu_forward_shuffled_cuda(const Tensor& v, int64_t k, const Tensor& out) {
  int64_t N, H;
  check_shuffled_cuda("swiglu_forward_shuffled", v, k, out, "out", &N, &H);
  const int64_t threads = N * (H / k);
  if (threads == 0) return;
  if (shuffled_vec_ok(k, H, {v.data, out.data})) {
    const int blocks = ceil_div(threads / 8, (int64_t)kThreads);
    if (v.dtype == DType::bf16)
      with_k(k, [&](auto K) {
        swiglu_forward_shuffled_vec_kernel<bf16, K()><<<blocks, kThreads, 0, cuda_stream()>>>(
            static_cast<const bf16*>(v.data), static_cast<bf16*>(out.data), N, H);
      });
    else
      with_k(k, [&](auto K) {
        swiglu_forward_shuffled_vec_kernel<float, K()><<<blocks, kThreads, 0, cuda_stream()>>>(v.f32(), out.f32(), N, H);
      });
    CUDA_CHECK_LAUNCH();
    return;
  }
  const int blocks = ceil_div(threads, (int64_t)kThreads);
  if (v.dtype == DType::bf16)
    swiglu_forward_shuffled_kernel<bf16><<<blocks, kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(v.data), static_cast<bf16*>(out.data), N, H, k);
  else
    swiglu_forward_shuffled_kernel<float><<<blocks, kThreads, 0, cuda_stream()>>>(v.f32(), out.f32(), N, H, k);
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward_shuffled_cuda(const Tensor& v, int64_t k, const Tensor& dout, const Tensor& dv,
                                   const Tensor& out) {
  const char* op = "swiglu_backward_shuffled";
  int64_t N, H;
  check_shuffled_cuda(op, v, k, dout, "dout", &N, &H);
  check_cuda_arg(op, "dv", dv, {v.dtype}, {N, 2 * H});
  if (is_given(out)) check_cuda_arg(op, "out", out, {v.dtype}, {N, H});
  const int64_t threads = N * (H / k);
  if (threads == 0) return;
  if (shuffled_vec_ok(k, H, {v.data, dout.data, dv.data, is_given(out) ? out.data : nullptr})) {
    const int blocks = ceil_div(threads / 8, (int64_t)kThreads);
    if (v.dtype == DType::bf16)
      with_k(k, [&](auto K) {
        swiglu_backward_shuffled_vec_kernel<bf16, K()><<<blocks, kThreads, 0, cuda_stream()>>>(
            static_cast<const bf16*>(v.data), static_cast<const bf16*>(dout.data), static_cast<bf16*>(dv.data),
            is_given(out) ? static_cast<bf16*>(out.data) : nullptr, N, H);
      });
    else
      with_k(k, [&](auto K) {
        swiglu_backward_shuffled_vec_kernel<float, K()><<<blocks, kThreads, 0, cuda_stream()>>>(
            v.f32(), dout.f32(), dv.f32(), is_given(out) ? out.f32() : nullptr, N, H);
      });
    CUDA_CHECK_LAUNCH();
    return;
  }
  const int blocks = ceil_div(threads, (int64_t)kThreads);
  if (v.dtype == DType::bf16)
    swiglu_backward_shuffled_kernel<bf16><<<blocks, kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(v.data), static_cast<const bf16*>(dout.data), static_cast<bf16*>(dv.data),
        is_given(out) ? static_cast<bf16*>(out.data) : nullptr, N, H, k);
  else
    swiglu_backward_shuffled_kernel<float><<<blocks, kThreads, 0, cuda_stream()>>>(
        v.f32(), dout.f32(), dv.f32(), is_given(out) ? out.f32() : nullptr, N, H, k);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
