// RMSNorm on CUDA, fp32 math, 16-byte loads when D % 8 == 0 and the pointers are 16-byte aligned.
// Forward: one block per row. Backward (deterministic, no float atomics; see rmsnorm.h):
//  - rows path (D <= 4096 vectorised, D <= 2048 scalar): a warp (or 2 or 4) per row, several rows
//    in flight per block with no block barrier per row; x, dy and the old dx of a row are loaded
//    at once into registers and each element is read once (the bandwidth limit: ~2.5 TB/s on H100);
//  - block path (larger D): one block per row, the row read twice;
//  then the blocks' dw partials are summed by a second kernel in a fixed tree order.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/rmsnorm/rmsnorm.h"

namespace lingua {

namespace {

// Sum over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order: a butterfly
// within each warp, then every thread adds the warp sums in warp order. All threads get the same
// value. red: 32 floats of shared memory, reusable by the next call.
// Butterfly sum over the warp: every lane gets the same bits (a + b == b + a at each step).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
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

// ---- backward ----

enum CopyKind : int { kNoCopy = 0, kCopyF32 = 1, kCopyBf16 = 2 };

// dx[off .. off + V) = o and, when asked, dx_copy there = the value dx now holds, in its dtype.
template <int V, class TDX>
__device__ __forceinline__ void store_dx(TDX* dx, void* __restrict__ dx_copy, int copy_kind, int64_t off,
                                         float (&o)[V]) {
  store<V>(dx + off, o);
  if (copy_kind == kNoCopy) return;
  if constexpr (std::is_same_v<TDX, bf16>) {
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = __bfloat162float(__float2bfloat16_rn(o[k]));
  }
  if (copy_kind == kCopyF32)
    store<V>(static_cast<float*>(dx_copy) + off, o);
  else
    store<V>(static_cast<bf16*>(dx_copy) + off, o);
}

constexpr int kRowWarps = 8;  // warps per block on the rows path
constexpr int kRowThreads = 32 * kRowWarps;

// Waits for the `threads` threads (whole warps) that use barrier `id` (1..15; 0 is __syncthreads).
__device__ __forceinline__ void group_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Rows path: a group of WPR warps per row, kRowWarps / WPR rows in flight per block, no block-wide
// barrier in the row loop. Block b handles rows [b R, min(N, (b + 1) R)), group g of it rows
// b R + g, b R + g + groups, ... Thread t of a group holds chunks c = t + 32 WPR i (i < CPT) of the
// row, V elements each: x, dy (and the old dx) are loaded together and stay in registers from the
// dot product to the dx pass, so each element is read once and a row costs one memory round trip.
// The group's dw accumulates in shared memory (groups x D floats, chunk-major: column c V + k at
// k * (D / V) + c, conflict-free), each slot touched by one thread only. At the end the block adds
// the groups in group order and writes partial[b, :] (still chunk-major: coalesced in the reduction).
// dy and dx are not __restrict__: dx may alias dy (each element is read before it is written, by
// the same thread).
template <class TX, class TDY, class TDX, int V, int CPT, int WPR>
__global__ void __launch_bounds__(kRowThreads, 2)
    rmsnorm_backward_rows_kernel(const TX* __restrict__ x, const float* __restrict__ w,
                                 const float* __restrict__ rstd, const TDY* dy, TDX* dx, void* __restrict__ dx_copy,
                                 int copy_kind, float* __restrict__ partial, int64_t N, int D, int rows_per_block,
                                 bool accumulate_dx) {
  constexpr int kTPR = 32 * WPR, kGroups = kRowWarps / WPR;
  extern __shared__ float smem_dw[];     // kGroups x D
  __shared__ float red[2][kRowWarps];  // warp sums of the dot product, by row parity (WPR > 1)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int group = warp / WPR, t = threadIdx.x % kTPR;
  const int chunks = D / V;
  float* acc = smem_dw + (int64_t)group * D;
#pragma unroll
  for (int i = 0; i < CPT; ++i) {
    const int c = t + kTPR * i;
    if (c < chunks)
#pragma unroll
      for (int k = 0; k < V; ++k) acc[k * chunks + c] = 0.0f;
  }

  const int64_t n0 = (int64_t)blockIdx.x * rows_per_block;
  const int64_t n1 = min(N, n0 + rows_per_block);
  int parity = 0;
  for (int64_t n = n0 + group; n < n1; n += kGroups) {
    const float r = rstd[n];
    const int64_t row = n * D;
    float xv[CPT][V], gv[CPT][V], ov[CPT][V];
#pragma unroll
    for (int i = 0; i < CPT; ++i) {
      const int c = t + kTPR * i;
      if (c < chunks) {
        load<V>(x + row + c * V, xv[i]);
        load<V>(dy + row + c * V, gv[i]);
        if (accumulate_dx) load<V>(dx + row + c * V, ov[i]);
      }
    }
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < CPT; ++i) {
      const int c = t + kTPR * i;
      if (c < chunks) {
        float wv[V];
        load<V>(w + c * V, wv);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          dot += gv[i][k] * wv[k] * xv[i][k];
          acc[k * chunks + c] += gv[i][k] * xv[i][k] * r;
        }
      }
    }
    dot = warp_sum(dot);
    if constexpr (WPR > 1) {
      // Double-buffered by row parity: a warp can only overwrite red[parity] two rows later, after
      // the next row's barrier, which every warp of the group reaches after reading it.
      if (lane == 0) red[parity][warp] = dot;
      group_barrier(1 + group, kTPR);
      dot = red[parity][group * WPR];
#pragma unroll
      for (int j = 1; j < WPR; ++j) dot += red[parity][group * WPR + j];
      parity ^= 1;
    }
    const float cr = dot * r * r * r / (float)D;
#pragma unroll
    for (int i = 0; i < CPT; ++i) {
      const int c = t + kTPR * i;
      if (c < chunks) {
        float wv[V], o[V];
        load<V>(w + c * V, wv);  // again, from L1: cheaper than holding it in registers
#pragma unroll
        for (int k = 0; k < V; ++k) o[k] = r * wv[k] * gv[i][k] - xv[i][k] * cr;
        if (accumulate_dx) {
#pragma unroll
          for (int k = 0; k < V; ++k) o[k] = ov[i][k] + o[k];
        }
        store_dx<V>(dx, dx_copy, copy_kind, row + c * V, o);
      }
    }
  }

  __syncthreads();
  float* out = partial + (int64_t)blockIdx.x * D;
  for (int s = threadIdx.x; s < D; s += kRowThreads) {
    float v = smem_dw[s];
#pragma unroll
    for (int g = 1; g < kGroups; ++g) v += smem_dw[(int64_t)g * D + s];
    out[s] = v;
  }
}

// Block path (D too large for the rows path). Block b handles rows [b R, min(N, (b + 1) R)), one
// row at a time with all its threads, reading the row twice. Its partial dw (chunk-major as
// above) lives in shared memory when it fits (dw_in_smem), else directly in the global partial
// row; each thread only touches its own columns, so no races.
template <class TX, class TDY, class TDX, int V>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_backward_block_kernel(const TX* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ rstd, const TDY* dy, TDX* dx, void* __restrict__ dx_copy,
                                  int copy_kind, float* __restrict__ partial, int64_t N, int D, int rows_per_block,
                                  bool accumulate_dx, bool dw_in_smem) {
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
    const int64_t row = n * D;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      float xv[V], gv[V], wv[V];
      load<V>(x + row + (int64_t)c * V, xv);
      load<V>(dy + row + (int64_t)c * V, gv);
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
      load<V>(x + row + (int64_t)c * V, xv);
      load<V>(dy + row + (int64_t)c * V, gv);
      load<V>(w + (int64_t)c * V, wv);
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = r * wv[k] * gv[k] - xv[k] * cr;
      if (accumulate_dx) {
        float old[V];
        load<V>(dx + row + (int64_t)c * V, old);
#pragma unroll
        for (int k = 0; k < V; ++k) o[k] = old[k] + o[k];
      }
      store_dx<V>(dx, dx_copy, copy_kind, row + (int64_t)c * V, o);
    }
  }

  if (dw_in_smem) {
    float* out = partial + (int64_t)blockIdx.x * D;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x)
#pragma unroll
      for (int k = 0; k < V; ++k) out[k * chunks + c] = acc[k * chunks + c];
  }
}

// dw[j] += sum over the P partial rows of partial[p, s(j)] (s: the chunk-major slot). Block: 8
// slots x 128 groups (a warp reads 4 rows x 32 bytes). Thread (group g, slot t) sums rows
// p = g, g + 128, ... in order; then warp t adds slot t's group sums: lane l takes groups l, l + 32,
// l + 64, l + 96 in order, then a butterfly. The order depends on P and D only.
constexpr int kReduceSlots = 8, kReduceGroups = 128;
template <int V>
__global__ void __launch_bounds__(kReduceSlots * kReduceGroups)
    rmsnorm_dw_reduce_kernel(const float* __restrict__ partial, float* __restrict__ dw, int P, int D) {
  __shared__ float sums[kReduceGroups][kReduceSlots + 1];
  const int t = threadIdx.x % kReduceSlots, g = threadIdx.x / kReduceSlots;
  const int s = blockIdx.x * kReduceSlots + t;
  float sum = 0.0f;
  if (s < D) {
#pragma unroll 4
    for (int p = g; p < P; p += kReduceGroups) sum += partial[(int64_t)p * D + s];
  }
  sums[g][t] = sum;
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (warp >= kReduceSlots) return;
  float v = sums[lane][warp];
#pragma unroll
  for (int k = 1; k < kReduceGroups / 32; ++k) v += sums[lane + 32 * k][warp];
  v = warp_sum(v);
  const int slot = blockIdx.x * kReduceSlots + warp;
  if (lane == 0 && slot < D) {
    const int chunks = D / V;
    dw[(slot % chunks) * V + slot / chunks] += v;
  }
}

// Persistent scratch for the dw partials: grown (synchronising the stream, then cudaMalloc) only
// when a call needs more than all earlier ones, so the steady state allocates nothing. Shared by
// all calls, which is safe because they run in order on cuda_stream(). Never freed.
float* dw_scratch(size_t bytes) {
  static DeviceBuffer* buf = new DeviceBuffer();
  return static_cast<float*>(cuda_grow_scratch(*buf, bytes, 1u << 20, "rmsnorm_backward"));
}

// Rows per block of the backward: at least kMinRowsPerBlock (the partial costs a few rows of
// traffic), at most kMaxBackwardBlocks blocks. Depends on N only, so results do not depend on the GPU.
constexpr int64_t kMinRowsPerBlock = 16, kMaxBackwardBlocks = 512;
// Block path: partial dw kept in shared memory up to this many columns: D floats plus the
// kernel's static 128 bytes stay under the 48 KiB a block gets without opting in.
constexpr int64_t kMaxSmemColumns = 12000;

// Whether the byte ranges of a and b intersect.
bool overlaps(const Tensor& a, const Tensor& b) {
  const char* pa = static_cast<const char*>(a.data);
  const char* pb = static_cast<const char*>(b.data);
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

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
                           const Tensor& dw, bool accumulate_dx, const Tensor& dx_copy) {
  const char* op = "rmsnorm_backward";
  check_cuda_arg(op, "x", x, {DType::f32, DType::bf16}, {-1, -1});
  const int64_t N = x.size(0), D = x.size(1);
  check_cuda_arg(op, "w", w, {DType::f32}, {D});
  check_cuda_arg(op, "rstd", rstd, {DType::f32}, {N});
  check_cuda_arg(op, "dy", dy, {DType::f32, DType::bf16}, {N, D});
  check_cuda_arg(op, "dx", dx, {DType::f32, DType::bf16}, {N, D});
  check_cuda_arg(op, "dw", dw, {DType::f32}, {D});
  const bool copy = is_given(dx_copy);
  if (copy) {
    check_cuda_arg(op, "dx_copy", dx_copy, {DType::f32, DType::bf16}, {N, D});
    LINGUA_CHECK(!overlaps(dx_copy, x), op, ": argument 'dx_copy' must not alias x");
    LINGUA_CHECK(!overlaps(dx_copy, dy), op, ": argument 'dx_copy' must not alias dy");
    LINGUA_CHECK(!overlaps(dx_copy, dx), op, ": argument 'dx_copy' must not alias dx");
  }
  LINGUA_CHECK(N < INT32_MAX && D < INT32_MAX, op, ": x is too large for the CUDA kernel (", x.str(), ")");
  if (N == 0 || D == 0) return;
  LINGUA_CHECK(dx.data != dy.data || dx.dtype == dy.dtype, op, ": dx may alias dy only when both have the same dtype");

  const int64_t rows_per_block = std::max(kMinRowsPerBlock, (N + kMaxBackwardBlocks - 1) / kMaxBackwardBlocks);
  const int64_t blocks = (N + rows_per_block - 1) / rows_per_block;
  float* partial = dw_scratch((size_t)(blocks * D) * sizeof(float));
  const bool vec = D % 8 == 0 && aligned16(x.data) && aligned16(w.data) && aligned16(dy.data) &&
                   aligned16(dx.data) && (!copy || aligned16(dx_copy.data));
  const int64_t chunks = vec ? D / 8 : D;
  // Rows path tiers (chunks per thread x warps per row: at most 32 elements per thread), or 0: the
  // block path.
  const int tier = vec ? (chunks <= 32 ? 1 : chunks <= 128 ? 2 : chunks <= 256 ? 3 : chunks <= 512 ? 4 : 0)
                       : (chunks <= 256 ? 5 : chunks <= 1024 ? 6 : chunks <= 2048 ? 7 : 0);
  const int copy_kind = !copy ? kNoCopy : dx_copy.dtype == DType::bf16 ? kCopyBf16 : kCopyF32;

  with_dtype(x.dtype, [&](auto tx) {
    with_dtype(dy.dtype, [&](auto tdy) {
      with_dtype(dx.dtype, [&](auto tdx) {
        using TX = decltype(tx);
        using TDY = decltype(tdy);
        using TDX = decltype(tdx);
        const auto* xp = static_cast<const TX*>(x.data);
        const auto* dyp = static_cast<const TDY*>(dy.data);
        auto* dxp = static_cast<TDX*>(dx.data);
        if (tier > 0) {
          auto kernel = tier == 1   ? rmsnorm_backward_rows_kernel<TX, TDY, TDX, 8, 1, 1>
                        : tier == 2 ? rmsnorm_backward_rows_kernel<TX, TDY, TDX, 8, 4, 1>
                        : tier == 3 ? rmsnorm_backward_rows_kernel<TX, TDY, TDX, 8, 4, 2>
                        : tier == 4 ? rmsnorm_backward_rows_kernel<TX, TDY, TDX, 8, 4, 4>
                        : tier == 5 ? rmsnorm_backward_rows_kernel<TX, TDY, TDX, 1, 8, 1>
                        : tier == 6 ? rmsnorm_backward_rows_kernel<TX, TDY, TDX, 1, 32, 1>
                                    : rmsnorm_backward_rows_kernel<TX, TDY, TDX, 1, 32, 2>;
          const int wpr = tier == 3 || tier == 7 ? 2 : tier == 4 ? 4 : 1;
          const size_t smem = (size_t)(kRowWarps / wpr) * D * sizeof(float);  // at most 32 KiB
          kernel<<<(unsigned)blocks, kRowThreads, smem, cuda_stream()>>>(
              xp, w.f32(), rstd.f32(), dyp, dxp, dx_copy.data, copy_kind, partial, N, (int)D, (int)rows_per_block,
              accumulate_dx);
        } else {
          const bool dw_in_smem = D <= kMaxSmemColumns;
          const size_t smem = dw_in_smem ? (size_t)D * sizeof(float) : 0;
          auto kernel = vec ? rmsnorm_backward_block_kernel<TX, TDY, TDX, 8>
                            : rmsnorm_backward_block_kernel<TX, TDY, TDX, 1>;
          kernel<<<(unsigned)blocks, row_threads(D, vec ? 8 : 1), smem, cuda_stream()>>>(
              xp, w.f32(), rstd.f32(), dyp, dxp, dx_copy.data, copy_kind, partial, N, (int)D, (int)rows_per_block,
              accumulate_dx, dw_in_smem);
        }
      });
    });
  });
  CUDA_CHECK_LAUNCH();
  auto reduce = vec ? rmsnorm_dw_reduce_kernel<8> : rmsnorm_dw_reduce_kernel<1>;
  reduce<<<ceil_div(D, kReduceSlots), kReduceSlots * kReduceGroups, 0, cuda_stream()>>>(partial, dw.f32(),
                                                                                       (int)blocks, (int)D);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
