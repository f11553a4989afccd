// SwiGLU on CUDA: elementwise over the flattened [N * H] tensors, 8 elements per thread, loaded
// 16 bytes wide (bf16: one access, f32: two) when every pointer is 16-byte aligned; the last
// partial chunk, or every chunk of misaligned tensors, element by element. fp32 math.
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {

namespace {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void from_f32(float v, float* p) { *p = v; }
__device__ __forceinline__ void from_f32(float v, bf16* p) { *p = __float2bfloat16_rn(v); }

template <class T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = __uint_as_float(w[k] << 16);
      v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
    }
  }
}

template <class T>
__device__ __forceinline__ void store8(T* p, const float (&v)[8]) {
  if constexpr (std::is_same_v<T, float>) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k]));
      const uint32_t hi = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k + 1]));
      w[k] = lo | (hi << 16);
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// As the CPU: expf(-a) overflows to inf for very negative a, giving 0 (not NaN).
__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

constexpr int kThreads = 256;

// Outputs are not __restrict__: they may alias inputs (every element is read before it is written,
// by the same thread).
template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(const T* a, const T* b, T* out, int64_t n, bool vec) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i >= n) return;
  if (vec && i + 8 <= n) {
    float av[8], bv[8], o[8];
    load8(a + i, av);
    load8(b + i, bv);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = av[k] * sigmoid(av[k]) * bv[k];
    store8(out + i, o);
  } else {
    for (int64_t j = i; j < n && j < i + 8; ++j) {
      const float x = to_f32(a[j]);
      from_f32(x * sigmoid(x) * to_f32(b[j]), out + j);
    }
  }
}

// d silu(a) / da = s + a s (1 - s),  s = sigmoid(a)
template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(const T* a, const T* b, const T* dout, T* da, T* db, T* out, int64_t n, bool vec) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i >= n) return;
  if (vec && i + 8 <= n) {
    float av[8], bv[8], gv[8], dav[8], dbv[8], ov[8];
    load8(a + i, av);
    load8(b + i, bv);
    load8(dout + i, gv);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float x = av[k], s = sigmoid(x), dy = gv[k];
      dav[k] = dy * bv[k] * (s + x * s * (1.0f - s));
      dbv[k] = dy * x * s;
      ov[k] = x * s * bv[k];
    }
    store8(da + i, dav);
    store8(db + i, dbv);
    if (out) store8(out + i, ov);
  } else {
    for (int64_t j = i; j < n && j < i + 8; ++j) {
      const float x = to_f32(a[j]), bj = to_f32(b[j]), dy = to_f32(dout[j]), s = sigmoid(x);
      from_f32(dy * bj * (s + x * s * (1.0f - s)), da + j);
      from_f32(dy * x * s, db + j);
      if (out) from_f32(x * s * bj, out + j);
    }
  }
}

// Packed kernels: element i = n H + j of the [N, H] outputs reads a at n 2H + j and b at
// n 2H + H + j. Vector path when H % 8 == 0 (8 elements never straddle a row) and aligned.
template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_packed_kernel(const T* ab, T* out, int64_t n, int64_t H, bool vec) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i >= n) return;
  if (vec && i + 8 <= n) {
    const int64_t r = i / H, j = i - r * H;
    float av[8], bv[8], o[8];
    load8(ab + r * 2 * H + j, av);
    load8(ab + r * 2 * H + H + j, bv);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = av[k] * sigmoid(av[k]) * bv[k];
    store8(out + i, o);
  } else {
    for (int64_t e = i; e < n && e < i + 8; ++e) {
      const int64_t r = e / H, j = e - r * H;
      const float x = to_f32(ab[r * 2 * H + j]);
      from_f32(x * sigmoid(x) * to_f32(ab[r * 2 * H + H + j]), out + e);
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_packed_kernel(const T* ab, const T* dout, T* dab, T* out, int64_t n, int64_t H, bool vec) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i >= n) return;
  if (vec && i + 8 <= n) {
    const int64_t r = i / H, j = i - r * H, ia = r * 2 * H + j, ib = ia + H;
    float av[8], bv[8], gv[8], dav[8], dbv[8], ov[8];
    load8(ab + ia, av);
    load8(ab + ib, bv);
    load8(dout + i, gv);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float x = av[k], s = sigmoid(x), dy = gv[k];
      dav[k] = dy * bv[k] * (s + x * s * (1.0f - s));
      dbv[k] = dy * x * s;
      ov[k] = x * s * bv[k];
    }
    store8(dab + ia, dav);
    store8(dab + ib, dbv);
    if (out) store8(out + i, ov);
  } else {
    for (int64_t e = i; e < n && e < i + 8; ++e) {
      const int64_t r = e / H, j = e - r * H, ia = r * 2 * H + j, ib = ia + H;
      const float x = to_f32(ab[ia]), bj = to_f32(ab[ib]), dy = to_f32(dout[e]), s = sigmoid(x);
      from_f32(dy * bj * (s + x * s * (1.0f - s)), dab + ia);
      from_f32(dy * x * s, dab + ib);
      if (out) from_f32(x * s * bj, out + e);
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

void check_same_dtype(const char* op, const Tensor& a, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  for (auto [name, t] : ts)
    LINGUA_CHECK(t->dtype == a.dtype, op, ": argument '", name, "' has dtype ", dtype_name(t->dtype),
                 ", expected a's dtype ", dtype_name(a.dtype));
}

int blocks_for(int64_t n) { return ceil_div(n, 8LL * kThreads); }

}  // namespace

void swiglu_forward_cuda(const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* op = "swiglu_forward";
  check_cuda_arg(op, "a", a, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = a.size(0), H = a.size(1);
  check_cuda_arg(op, "b", b, {DType::bf16, DType::f32}, {N, H});
  check_cuda_arg(op, "out", out, {DType::bf16, DType::f32}, {N, H});
  check_same_dtype(op, a, {{"b", &b}, {"out", &out}});
  const int64_t n = N * H;
  if (n == 0) return;
  const bool vec = aligned16(a.data) && aligned16(b.data) && aligned16(out.data);
  if (a.dtype == DType::bf16)
    swiglu_forward_kernel<bf16><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(a.data), static_cast<const bf16*>(b.data), static_cast<bf16*>(out.data), n, vec);
  else
    swiglu_forward_kernel<float><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(a.f32(), b.f32(), out.f32(), n, vec);
  CUDA_CHECK_LAUNCH();
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
  const bool with_out = is_given(out);
  if (with_out) {
    check_cuda_arg(op, "out", out, {DType::bf16, DType::f32}, {N, H});
    check_same_dtype(op, a, {{"out", &out}});
  }
  const int64_t n = N * H;
  if (n == 0) return;
  const bool vec = aligned16(a.data) && aligned16(b.data) && aligned16(dout.data) && aligned16(da.data) &&
                   aligned16(db.data) && (!with_out || aligned16(out.data));
  if (a.dtype == DType::bf16)
    swiglu_backward_kernel<bf16><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(a.data), static_cast<const bf16*>(b.data), static_cast<const bf16*>(dout.data),
        static_cast<bf16*>(da.data), static_cast<bf16*>(db.data), with_out ? static_cast<bf16*>(out.data) : nullptr,
        n, vec);
  else
    swiglu_backward_kernel<float><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        a.f32(), b.f32(), dout.f32(), da.f32(), db.f32(), with_out ? out.f32() : nullptr, n, vec);
  CUDA_CHECK_LAUNCH();
}

namespace {
void check_packed_cuda(const char* op, const Tensor& ab, const Tensor& other, const char* other_name, int64_t* N,
                       int64_t* H) {
  check_cuda_arg(op, "ab", ab, {DType::bf16, DType::f32}, {-1, -1});
  LINGUA_CHECK(ab.size(1) % 2 == 0, op, ": ab must be [N, 2H], got ", ab.str());
  *N = ab.size(0);
  *H = ab.size(1) / 2;
  check_cuda_arg(op, other_name, other, {ab.dtype}, {*N, *H});
}
}  // namespace

void swiglu_forward_packed_cuda(const Tensor& ab, const Tensor& out) {
  const char* op = "swiglu_forward_packed";
  int64_t N, H;
  check_packed_cuda(op, ab, out, "out", &N, &H);
  const int64_t n = N * H;
  if (n == 0) return;
  const bool vec = H % 8 == 0 && aligned16(ab.data) && aligned16(out.data);
  if (ab.dtype == DType::bf16)
    swiglu_forward_packed_kernel<bf16><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(ab.data), static_cast<bf16*>(out.data), n, H, vec);
  else
    swiglu_forward_packed_kernel<float><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(ab.f32(), out.f32(), n, H, vec);
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward_packed_cuda(const Tensor& ab, const Tensor& dout, const Tensor& dab, const Tensor& out) {
  const char* op = "swiglu_backward_packed";
  int64_t N, H;
  check_packed_cuda(op, ab, dout, "dout", &N, &H);
  check_cuda_arg(op, "dab", dab, {ab.dtype}, {N, 2 * H});
  const bool with_out = is_given(out);
  if (with_out) check_cuda_arg(op, "out", out, {ab.dtype}, {N, H});
  const int64_t n = N * H;
  if (n == 0) return;
  const bool vec = H % 8 == 0 && aligned16(ab.data) && aligned16(dout.data) && aligned16(dab.data) &&
                   (!with_out || aligned16(out.data));
  if (ab.dtype == DType::bf16)
    swiglu_backward_packed_kernel<bf16><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        static_cast<const bf16*>(ab.data), static_cast<const bf16*>(dout.data), static_cast<bf16*>(dab.data),
        with_out ? static_cast<bf16*>(out.data) : nullptr, n, H, vec);
  else
    swiglu_backward_packed_kernel<float><<<blocks_for(n), kThreads, 0, cuda_stream()>>>(
        ab.f32(), dout.f32(), dab.f32(), with_out ? out.f32() : nullptr, n, H, vec);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
