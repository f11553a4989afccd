// RMSNorm on CUDA: one block per row, fp32 math, 16-byte loads when D % 8 == 0 and the pointers are
// 16-byte aligned. Backward is deterministic: fixed row ranges per block, partial dw in a scratch
// buffer, partials summed in block order by a second kernel (see rmsnorm.h).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"

namespace lingua {

namespace {

// ---- element access: V = 8 consecutive elements (16-byte aligned) or V = 1 ----

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void from_f32(float v, float* p) { *p = v; }
__device__ __forceinline__ void from_f32(float v, bf16* p) { *p = __float2bfloat16_rn(v); }

template <int V, class T>
__device__ __forceinline__ void load(const T* p, float (&v)[V]) {
  if constexpr (V == 1) {
    v[0] = to_f32(p[0]);
  } else if constexpr (std::is_same_v<T, float>) {
    static_assert(V == 8);
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    static_assert(V == 8 && std::is_same_v<T, bf16>);
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = __uint_as_float(w[k] << 16);              // low half: element 2k
      v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);  // high half: element 2k + 1
    }
  }
}

template <int V, class T>
__device__ __forceinline__ void store(T* p, const float (&v)[V]) {
  if constexpr (V == 1) {
    from_f32(v[0], p);
  } else if constexpr (std::is_same_v<T, float>) {
    static_assert(V == 8);
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    static_assert(V == 8 && std::is_same_v<T, bf16>);
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

// Sum over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order: a butterfly
// within each warp, then every thread adds the warp sums in warp order. All threads get the same
// value. red: 32 floats of shared memory, reusable by the next call.
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // the previous call's readers are done with red
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.0f;
  const int warps = blockDim.x >> 5;
  for (int i = 0; i < warps; ++i) s += red[i];
  return s;
}

constexpr int kMaxThreads = 256;

// Threads for one row of D elements taken V at a time: enough to cover the row once, in whole
// warps, at most kMaxThreads.
int row_threads(int64_t D, int V) {
  const int64_t chunks = (D + V - 1) / V;
  return (int)std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (chunks + 31) / 32 * 32));
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <class F>
void with_dtype(DType d, F&& f) {
  if (d == DType::bf16)
    f(bf16{});
  else
    f(float{});
}

template <class TX, class TY, int V>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_forward_kernel(const TX* __restrict__ x, const float* __restrict__ w, TY* __restrict__ y,
                           float* __restrict__ rstd, int D, float eps) {
  __shared__ float red[32];
  const int64_t n = blockIdx.x;
  const TX* xr = x + n * D;
  TY* yr = y + n * D;
  const int chunks = D / V;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[V];
    load<V>(xr + (int64_t)c * V, v);
#pragma unroll
    for (int k = 0; k < V; ++k) ss += v[k] * v[k];
  }
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / (float)D + eps);
  if (threadIdx.x == 0) rstd[n] = r;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[V], wv[V], o[V];
    load<V>(xr + (int64_t)c * V, v);
    load<V>(w + (int64_t)c * V, wv);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = v[k] * r * wv[k];
    store<V>(yr + (int64_t)c * V, o);
  }
}

// Block b handles rows [b R, min(N, (b + 1) R)) and writes its partial dw to partial[b, :] in
// "chunk-major" order: column c V + k is stored at k * (D / V) + c (conflict-free in shared memory,
// coalesced in the reduction). The partial lives in shared memory when it fits (dw_in_smem), else
// directly in the global partial row; each thread only touches its own columns, so no races.
// dy and dx are not __restrict__: dx may alias dy (each element is read before it is written, by
// the same thread).
template <class TX, class TDY, class TDX, int V>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_backward_kernel(const TX* __restrict__ x, const float* __restrict__ w, const float* __restrict__ rstd,
                            const TDY* dy, TDX* dx, float* __restrict__ partial, int64_t N, int D,
                            int rows_per_block, bool accumulate_dx, bool dw_in_smem) {
  extern __shared__ float smem_dw[];
  __shared__ float red[32];
  const int chunks = D / V;
  float* acc = dw_in_smem ? smem_dw : partial + (int64_t)blockIdx.x * D;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x)
#pragma unroll
    for (int k = 0; k < V; ++k) acc[k * chunks + c] = 0.0f;

  const int64_t n0 = (int64_t)blockIdx.x * rows_per_block;
  const int64_t n1 = min(N, n0 + rows_per_block);
  for (int64_t n = n0; n < n1; ++n) {
    const float r = rstd[n];
    const TX* xr = x + n * D;
    const TDY* dyr = dy + n * D;
    TDX* dxr = dx + n * D;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      float xv[V], gv[V], wv[V];
      load<V>(xr + (int64_t)c * V, xv);
      load<V>(dyr + (int64_t)c * V, gv);
      load<V>(w + (int64_t)c * V, wv);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        dot += gv[k] * wv[k] * xv[k];
        acc[k * chunks + c] += gv[k] * xv[k] * r;
      }
    }
    dot = block_sum(dot, red);
    const float cr = dot * r * r * r / (float)D;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      float xv[V], gv[V], wv[V], o[V];
      load<V>(xr + (int64_t)c * V, xv);
      load<V>(dyr + (int64_t)c * V, gv);
      load<V>(w + (int64_t)c * V, wv);
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = r * wv[k] * gv[k] - xv[k] * cr;
      if (accumulate_dx) {
        float old[V];
        load<V>(dxr + (int64_t)c * V, old);
#pragma unroll
        for (int k = 0; k < V; ++k) o[k] = old[k] + o[k];
      }
      store<V>(dxr + (int64_t)c * V, o);
    }
  }

  if (dw_in_smem) {
    float* out = partial + (int64_t)blockIdx.x * D;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x)
#pragma unroll
      for (int k = 0; k < V; ++k) out[k * chunks + c] = acc[k * chunks + c];
  }
}

// dw[j] += sum over blocks b = 0, 1, ... of partial[b, s(j)], in that order (s: the chunk-major slot).
template <int V>
__global__ void rmsnorm_dw_reduce_kernel(const float* __restrict__ partial, float* __restrict__ dw, int blocks,
                                         int D) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= D) return;
  const int chunks = D / V;
  float sum = 0.0f;
#pragma unroll 8
  for (int b = 0; b < blocks; ++b) sum += partial[(int64_t)b * D + s];
  const int j = (s % chunks) * V + s / chunks;
  dw[j] += sum;
}

// Persistent scratch for the dw partials: grown (synchronising the stream, then cudaMalloc) only
// when a call needs more than all earlier ones, so the steady state allocates nothing. Shared by
// all calls, which is safe because they run in order on cuda_stream(). Never freed.
float* dw_scratch(size_t bytes) {
  static DeviceBuffer* buf = new DeviceBuffer();
  if (buf->bytes() < bytes) {
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));  // kernels in flight may still read the old one
    *buf = DeviceBuffer();
    *buf = DeviceBuffer(std::max<size_t>(bytes, 1u << 20));
  }
  return buf->as<float>();
}

// Blocks of the backward: at least kMinRowsPerBlock rows each (the partial costs one row of
// traffic), at most kMaxBackwardBlocks blocks. Depends on N only, so results do not depend on the GPU.
constexpr int64_t kMinRowsPerBlock = 8, kMaxBackwardBlocks = 512;
// Partial dw kept in shared memory up to this many columns: D floats plus the kernel's static
// 128 bytes stay under the 48 KiB a block gets without opting in.
constexpr int64_t kMaxSmemColumns = 12000;

}  // namespace

void rmsnorm_forward_cuda(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  check_cuda_arg(op, "x", x, {DType::f32, DType::bf16}, {-1, -1});
  const int64_t N = x.size(0), D = x.size(1);
  check_cuda_arg(op, "w", w, {DType::f32}, {D});
  check_cuda_arg(op, "y", y, {DType::f32, DType::bf16}, {N, D});
  check_cuda_arg(op, "rstd", rstd, {DType::f32}, {N});
  LINGUA_CHECK(D > 0, op, ": rows of x are empty (", x.str(), ")");
  LINGUA_CHECK(N < INT32_MAX && D < INT32_MAX, op, ": x is too large for the CUDA kernel (", x.str(), ")");
  if (N == 0) return;
  const bool vec = D % 8 == 0 && aligned16(x.data) && aligned16(w.data) && aligned16(y.data);
  const int V = vec ? 8 : 1;
  const int threads = row_threads(D, V);
  with_dtype(x.dtype, [&](auto tx) {
    with_dtype(y.dtype, [&](auto ty) {
      using TX = decltype(tx);
      using TY = decltype(ty);
      auto kernel = vec ? rmsnorm_forward_kernel<TX, TY, 8> : rmsnorm_forward_kernel<TX, TY, 1>;
      kernel<<<(unsigned)N, threads, 0, cuda_stream()>>>(static_cast<const TX*>(x.data), w.f32(),
                                                          static_cast<TY*>(y.data), rstd.f32(), (int)D, eps);
    });
  });
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy, const Tensor& dx,
                           const Tensor& dw, bool accumulate_dx) {
  const char* op = "rmsnorm_backward";
  check_cuda_arg(op, "x", x, {DType::f32, DType::bf16}, {-1, -1});
  const int64_t N = x.size(0), D = x.size(1);
  check_cuda_arg(op, "w", w, {DType::f32}, {D});
  check_cuda_arg(op, "rstd", rstd, {DType::f32}, {N});
  check_cuda_arg(op, "dy", dy, {DType::f32, DType::bf16}, {N, D});
  check_cuda_arg(op, "dx", dx, {DType::f32, DType::bf16}, {N, D});
  check_cuda_arg(op, "dw", dw, {DType::f32}, {D});
  LINGUA_CHECK(N < INT32_MAX && D < INT32_MAX, op, ": x is too large for the CUDA kernel (", x.str(), ")");
  if (N == 0 || D == 0) return;
  LINGUA_CHECK(dx.data != dy.data || dx.dtype == dy.dtype, op, ": dx may alias dy only when both have the same dtype");

  const int64_t rows_per_block = std::max(kMinRowsPerBlock, (N + kMaxBackwardBlocks - 1) / kMaxBackwardBlocks);
  const int64_t blocks = (N + rows_per_block - 1) / rows_per_block;
  float* partial = dw_scratch((size_t)(blocks * D) * sizeof(float));
  const bool dw_in_smem = D <= kMaxSmemColumns;
  const size_t smem = dw_in_smem ? (size_t)D * sizeof(float) : 0;
  const bool vec = D % 8 == 0 && aligned16(x.data) && aligned16(w.data) && aligned16(dy.data) && aligned16(dx.data);
  const int threads = row_threads(D, vec ? 8 : 1);

  with_dtype(x.dtype, [&](auto tx) {
    with_dtype(dy.dtype, [&](auto tdy) {
      with_dtype(dx.dtype, [&](auto tdx) {
        using TX = decltype(tx);
        using TDY = decltype(tdy);
        using TDX = decltype(tdx);
        auto kernel = vec ? rmsnorm_backward_kernel<TX, TDY, TDX, 8> : rmsnorm_backward_kernel<TX, TDY, TDX, 1>;
        kernel<<<(unsigned)blocks, threads, smem, cuda_stream()>>>(
            static_cast<const TX*>(x.data), w.f32(), rstd.f32(), static_cast<const TDY*>(dy.data),
            static_cast<TDX*>(dx.data), partial, N, (int)D, (int)rows_per_block, accumulate_dx, dw_in_smem);
      });
    });
  });
  CUDA_CHECK_LAUNCH();
  constexpr int kReduceThreads = 64;
  auto reduce = vec ? rmsnorm_dw_reduce_kernel<8> : rmsnorm_dw_reduce_kernel<1>;
  reduce<<<ceil_div(D, kReduceThreads), kReduceThreads, 0, cuda_stream()>>>(partial, dw.f32(), (int)blocks, (int)D);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
