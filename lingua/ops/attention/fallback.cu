// Fallback attention kernels: simple, exact-order (deterministic) flash-style attention in fp32
// arithmetic for f32 or bf16 tensors, any head_dim up to 256, any T, S >= T (forward). Used where
// cuDNN does not apply (f32, head_dims other than 64 / 128, the KV-cache forward, odd shapes on
// old cuDNN) and as the reference the cuDNN path is tested against.
//
// Layout: q/out/dout/dq [B, T, H, hd], k/v/dk/dv [B, S, KV, hd], lse [B, H, T]. A block has
// kWarps warps; rows are staged through shared memory as fp32, and a warp's 32 lanes take 32 keys
// (or queries) of a tile for the dot products, then the head dimensions (lane + 32 i) for the
// weighted sums. Every sum runs in a fixed order (butterfly warp reductions, tiles in order), so
// two runs give the same bits, and no float atomics are used:
//   forward       block = (8 queries, head, batch): online softmax over key tiles.
//   backward D    D[b, h, t] = dout_t . out_t, one warp a row.
//   backward dkdv block = (8 keys, kv head, batch): loops over the group's query heads in order
//                 and their queries t >= s in tiles; dv_s = sum p dout, dk_s = scale sum dS q.
//   backward dq   block = (8 queries, head, batch): loops over key tiles; dq_t = scale sum dS k.
// with p = exp(scale q.k - lse), dS = p (dout.v - D).
#include <cmath>
#include <cstdint>

#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/attention/cuda_internal.h"

namespace lingua::attention_internal {

namespace {

constexpr int kWarps = 8;           // warps a block: queries (forward, dq) or keys (dkdv) a block
constexpr int kThreads = 32 * kWarps;
constexpr int kTile = 32;           // keys (forward, dq) or queries (dkdv) a shared-memory tile
constexpr int kMaxPerLane = 8;      // head dimensions a lane owns: hd <= 32 * 8 = 256
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(bf16* p, float x) { *p = __float2bfloat16(x); }

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}

// 16 bytes of T as fp32 into dst[0 .. 16 / sizeof(T)).
__device__ __forceinline__ void unpack16(const float* src, float* dst) {
  const float4 u = *reinterpret_cast<const float4*>(src);
  dst[0] = u.x, dst[1] = u.y, dst[2] = u.z, dst[3] = u.w;
}
__device__ __forceinline__ void unpack16(const bf16* src, float* dst) {
  const uint4 u = *reinterpret_cast<const uint4*>(src);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    dst[2 * i] = __uint_as_float(w[i] << 16);
    dst[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// Block-cooperative copy of rows [row0, row0 + nrows) of one head of a [B, L, NH, hd] tensor into
// dst (row r at dst + r * dst_stride, as fp32); rows at or past L are zero-filled. `base` points at
// (batch b, row 0, head). 16-byte loads when `vec` (hd a multiple of 16 / sizeof(T) and the tensor
// 16-byte aligned), else element by element.
template <class T>
__device__ void load_rows(float* dst, int dst_stride, const T* base, int64_t row_stride, int64_t row0, int nrows,
                          int64_t L, int hd, bool vec) {
  constexpr int V = 16 / sizeof(T);
  if (vec) {
    const int chunks = hd / V;
    for (int i = threadIdx.x; i < nrows * chunks; i += blockDim.x) {
      const int r = i / chunks, c = i - r * chunks;
      float tmp[V];
      if (row0 + r < L) {
        unpack16(base + (row0 + r) * row_stride + c * V, tmp);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) tmp[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < V; ++e) dst[r * dst_stride + c * V + e] = tmp[e];
    }
  } else {
    for (int i = threadIdx.x; i < nrows * hd; i += blockDim.x) {
      const int r = i / hd, d = i - r * hd;
      dst[r * dst_stride + d] = row0 + r < L ? to_f(base[(row0 + r) * row_stride + d]) : 0.0f;
    }
  }
}

struct Dims {
  int64_t B, T, S, H, KV, hd, group;
  int64_t kv_batch;  // elements from one sequence's keys to the next's (S KV hd, or more in a cache)
  float scale;
  bool vec;  // 16-byte loads allowed
};

// ---------------------------------------------------------------- forward
// Shared memory: q rows [kWarps][hd], key tile [kTile][hd + 1], value tile [kTile][hd].
template <class T>
__global__ void __launch_bounds__(kThreads) forward_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                           const T* __restrict__ v, T* __restrict__ out,
                                                           float* __restrict__ lse, Dims dm) {
  extern __shared__ float smem[];
  const int hd = (int)dm.hd;
  float* q_s = smem;
  float* k_s = q_s + kWarps * hd;
  float* v_s = k_s + kTile * (hd + 1);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, h = blockIdx.y, g = h / dm.group;
  const int64_t t0 = (int64_t)blockIdx.x * kWarps, t = t0 + warp;
  const bool active = t < dm.T;
  const int64_t offset = dm.S - dm.T;  // query t sees keys s <= t + offset

  load_rows(q_s, hd, q + (b * dm.T * dm.H + h) * dm.hd, dm.H * dm.hd, t0, kWarps, dm.T, hd, dm.vec);
  const int64_t t_last = (t0 + kWarps < dm.T ? t0 + kWarps : dm.T) - 1;
  const int64_t n_keys = t_last + offset + 1;  // keys any query of the block sees (<= S)
  const T* kb = k + b * dm.kv_batch + g * dm.hd;
  const T* vb = v + b * dm.kv_batch + g * dm.hd;

  float m = -INFINITY, l = 0.0f, acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) acc[i] = 0.0f;
  const float* qrow = q_s + warp * hd;

  for (int64_t s0 = 0; s0 < n_keys; s0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and q_s written, on the first pass)
    load_rows(k_s, hd + 1, kb, dm.KV * dm.hd, s0, kTile, dm.S, hd, dm.vec);
    load_rows(v_s, hd, vb, dm.KV * dm.hd, s0, kTile, dm.S, hd, dm.vec);
    __syncthreads();
    if (!active) continue;
    const int64_t s = s0 + lane;
    float score = -INFINITY;
    if (s <= t + offset) {  // implies s < S
      const float* krow = k_s + lane * (hd + 1);
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot = fmaf(qrow[d], krow[d], dot);
      score = dot * dm.scale;
    }
    // Key 0 is in the first tile and every query sees it, so m_new is finite from there on.
    const float m_new = fmaxf(m, warp_max(score));
    const float p = score == -INFINITY ? 0.0f : expf(score - m_new);
    const float corr = expf(m - m_new);  // 0 on the first tile (m = -inf)
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) acc[i] *= corr;
    for (int j = 0; j < kTile; ++j) {
      const float pj = __shfl_sync(kFull, p, j);
      if (pj == 0.0f) continue;  // uniform across the warp
      const float* vrow = v_s + j * hd;
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) acc[i] = fmaf(pj, vrow[d], acc[i]);
      }
    }
    m = m_new;
  }
  if (!active) return;
  const float inv = 1.0f / l;
  T* orow = out + ((b * dm.T + t) * dm.H + h) * dm.hd;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) store(orow + d, acc[i] * inv);
  }
  if (lse && lane == 0) lse[(b * dm.H + h) * dm.T + t] = m + logf(l);
}

// ---------------------------------------------------------------- backward
// D[b, h, t] = sum_d dout * out: one warp a row of [B, T, H].
template <class T>
__global__ void __launch_bounds__(kThreads) dot_rows_kernel(const T* __restrict__ dout, const T* __restrict__ out,
                                                            float* __restrict__ D, Dims dm) {
  const int64_t row = (int64_t)blockIdx.x * kWarps + threadIdx.x / 32;  // (b, t, h)
  const int lane = threadIdx.x % 32;
  if (row >= dm.B * dm.T * dm.H) return;
  const T* a = dout + row * dm.hd;
  const T* c = out + row * dm.hd;
  float s = 0.0f;
  for (int64_t d = lane; d < dm.hd; d += 32) s = fmaf(to_f(a[d]), to_f(c[d]), s);
  s = warp_sum(s);
  if (lane == 0) {
    const int64_t h = row % dm.H, bt = row / dm.H, t = bt % dm.T, b = bt / dm.T;
    D[(b * dm.H + h) * dm.T + t] = s;
  }
}

// dk, dv. Shared memory: key rows [kWarps][hd], value rows [kWarps][hd], query tile
// [kTile][hd + 1], dout tile [kTile][hd + 1], lse [kTile], D [kTile].
template <class T>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                        const T* __restrict__ v, const T* __restrict__ dout,
                                                        const float* __restrict__ lse, const float* __restrict__ D,
                                                        T* __restrict__ dk, T* __restrict__ dv, Dims dm) {
  extern __shared__ float smem[];
  const int hd = (int)dm.hd;
  float* k_s = smem;
  float* v_s = k_s + kWarps * hd;
  float* q_s = v_s + kWarps * hd;
  float* do_s = q_s + kTile * (hd + 1);
  float* lse_s = do_s + kTile * (hd + 1);
  float* D_s = lse_s + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, g = blockIdx.y;
  const int64_t s0 = (int64_t)blockIdx.x * kWarps, s = s0 + warp;  // S == T
  const bool active = s < dm.T;

  load_rows(k_s, hd, k + (b * dm.T * dm.KV + g) * dm.hd, dm.KV * dm.hd, s0, kWarps, dm.T, hd, dm.vec);
  load_rows(v_s, hd, v + (b * dm.T * dm.KV + g) * dm.hd, dm.KV * dm.hd, s0, kWarps, dm.T, hd, dm.vec);
  const float* krow = k_s + warp * hd;
  const float* vrow = v_s + warp * hd;

  float dk_acc[kMaxPerLane], dv_acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) dk_acc[i] = dv_acc[i] = 0.0f;

  for (int64_t h = g * dm.group; h < (g + 1) * dm.group; ++h) {
    const T* qb = q + (b * dm.T * dm.H + h) * dm.hd;
    const T* dob = dout + (b * dm.T * dm.H + h) * dm.hd;
    const float* lse_h = lse + (b * dm.H + h) * dm.T;
    const float* D_h = D + (b * dm.H + h) * dm.T;
    for (int64_t t0 = s0; t0 < dm.T; t0 += kTile) {  // queries t >= s0 see the block's keys
      __syncthreads();
      load_rows(q_s, hd + 1, qb, dm.H * dm.hd, t0, kTile, dm.T, hd, dm.vec);
      load_rows(do_s, hd + 1, dob, dm.H * dm.hd, t0, kTile, dm.T, hd, dm.vec);
      if (threadIdx.x < kTile) {
        const int64_t t = t0 + threadIdx.x;
        lse_s[threadIdx.x] = t < dm.T ? lse_h[t] : 0.0f;
        D_s[threadIdx.x] = t < dm.T ? D_h[t] : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
      const int64_t t = t0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (t < dm.T && t >= s) {
        const float* qr = q_s + lane * (hd + 1);
        const float* dr = do_s + lane * (hd + 1);
        float sc = 0.0f, dp = 0.0f;
        for (int d = 0; d < hd; ++d) {
          sc = fmaf(qr[d], krow[d], sc);
          dp = fmaf(dr[d], vrow[d], dp);
        }
        p = expf(sc * dm.scale - lse_s[lane]);
        ds = p * (dp - D_s[lane]);
      }
      for (int j = 0; j < kTile; ++j) {
        const float pj = __shfl_sync(kFull, p, j);
        const float dsj = __shfl_sync(kFull, ds, j);
        if (pj == 0.0f && dsj == 0.0f) continue;  // uniform across the warp
        const float* qr = q_s + j * (hd + 1);
        const float* dr = do_s + j * (hd + 1);
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < hd) {
            dv_acc[i] = fmaf(pj, dr[d], dv_acc[i]);
            dk_acc[i] = fmaf(dsj, qr[d], dk_acc[i]);
          }
        }
      }
    }
  }
  if (!active) return;
  const int64_t row = ((b * dm.T + s) * dm.KV + g) * dm.hd;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) {
      store(dk + row + d, dm.scale * dk_acc[i]);
      store(dv + row + d, dv_acc[i]);
    }
  }
}

// dq. Shared memory: query rows [kWarps][hd], dout rows [kWarps][hd], key tile [kTile][hd + 1],
// value tile [kTile][hd + 1].
template <class T>
__global__ void __launch_bounds__(kThreads) dq_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                      const T* __restrict__ v, const T* __restrict__ dout,
                                                      const float* __restrict__ lse, const float* __restrict__ D,
                                                      T* __restrict__ dq, Dims dm) {
  extern __shared__ float smem[];
  const int hd = (int)dm.hd;
  float* q_s = smem;
  float* do_s = q_s + kWarps * hd;
  float* k_s = do_s + kWarps * hd;
  float* v_s = k_s + kTile * (hd + 1);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, h = blockIdx.y, g = h / dm.group;
  const int64_t t0 = (int64_t)blockIdx.x * kWarps, t = t0 + warp;
  const bool active = t < dm.T;

  load_rows(q_s, hd, q + (b * dm.T * dm.H + h) * dm.hd, dm.H * dm.hd, t0, kWarps, dm.T, hd, dm.vec);
  load_rows(do_s, hd, dout + (b * dm.T * dm.H + h) * dm.hd, dm.H * dm.hd, t0, kWarps, dm.T, hd, dm.vec);
  const float lse_t = active ? lse[(b * dm.H + h) * dm.T + t] : 0.0f;
  const float D_t = active ? D[(b * dm.H + h) * dm.T + t] : 0.0f;
  const float* qrow = q_s + warp * hd;
  const float* dorow = do_s + warp * hd;
  const T* kb = k + (b * dm.T * dm.KV + g) * dm.hd;
  const T* vb = v + (b * dm.T * dm.KV + g) * dm.hd;
  const int64_t n_keys = t0 + kWarps < dm.T ? t0 + kWarps : dm.T;

  float acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) acc[i] = 0.0f;
  for (int64_t s0 = 0; s0 < n_keys; s0 += kTile) {
    __syncthreads();
    load_rows(k_s, hd + 1, kb, dm.KV * dm.hd, s0, kTile, dm.T, hd, dm.vec);
    load_rows(v_s, hd + 1, vb, dm.KV * dm.hd, s0, kTile, dm.T, hd, dm.vec);
    __syncthreads();
    if (!active) continue;
    const int64_t s = s0 + lane;
    float ds = 0.0f;
    if (s <= t) {
      const float* kr = k_s + lane * (hd + 1);
      const float* vr = v_s + lane * (hd + 1);
      float sc = 0.0f, dp = 0.0f;
      for (int d = 0; d < hd; ++d) {
        sc = fmaf(qrow[d], kr[d], sc);
        dp = fmaf(dorow[d], vr[d], dp);
      }
      const float p = expf(sc * dm.scale - lse_t);
      ds = p * (dp - D_t);
    }
    for (int j = 0; j < kTile; ++j) {
      const float dsj = __shfl_sync(kFull, ds, j);
      if (dsj == 0.0f) continue;  // uniform across the warp
      const float* kr = k_s + j * (hd + 1);
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) acc[i] = fmaf(dsj, kr[d], acc[i]);
      }
    }
  }
  if (!active) return;
  T* row = dq + ((b * dm.T + t) * dm.H + h) * dm.hd;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) store(row + d, dm.scale * acc[i]);
  }
}

// ---------------------------------------------------------------- launch helpers
// Dynamic shared memory above the 48 KiB default needs an opt-in per kernel.
template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

Dims make_dims(const Tensor& q, const Tensor& k, std::initializer_list<const Tensor*> rows) {
  Dims dm;
  dm.B = q.size(0), dm.T = q.size(1), dm.H = q.size(2), dm.hd = q.size(3);
  dm.S = k.size(1), dm.KV = k.size(2);
  dm.kv_batch = dm.S * dm.KV * dm.hd;
  dm.group = dm.H / dm.KV;
  dm.scale = 1.0f / std::sqrt((float)dm.hd);
  const int64_t V = 16 / (int64_t)dtype_size(q.dtype);
  dm.vec = dm.hd % V == 0;
  for (const Tensor* t : rows) dm.vec = dm.vec && aligned16(t->data);
  return dm;
}

template <class T>
void forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                  int64_t keys) {
  Dims dm = make_dims(q, k, {&q, &k, &v});
  if (keys >= 0) dm.S = keys;  // the first `keys` of k.size(1) rows (kv_batch unchanged)
  const size_t smem = sizeof(float) * (kWarps * dm.hd + kTile * (dm.hd + 1) + kTile * dm.hd);
  allow_smem(forward_kernel<T>, smem);
  const dim3 grid(ceil_div(dm.T, kWarps), (unsigned)dm.H, (unsigned)dm.B);
  forward_kernel<T><<<grid, kThreads, smem, cuda_stream()>>>(
      static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
      static_cast<T*>(out.data), lse.data ? static_cast<float*>(lse.data) : nullptr, dm);
  CUDA_CHECK_LAUNCH();
}

template <class T>
void backward_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const Dims dm = make_dims(q, k, {&q, &k, &v, &dout});
  float* D = static_cast<float*>(scratch(sizeof(float) * dm.B * dm.H * dm.T));
  const int64_t rows = dm.B * dm.T * dm.H;
  dot_rows_kernel<T><<<ceil_div(rows, kWarps), kThreads, 0, cuda_stream()>>>(
      static_cast<const T*>(dout.data), static_cast<const T*>(out.data), D, dm);
  CUDA_CHECK_LAUNCH();

  const T* qp = static_cast<const T*>(q.data);
  const T* kp = static_cast<const T*>(k.data);
  const T* vp = static_cast<const T*>(v.data);
  const T* dop = static_cast<const T*>(dout.data);
  const float* lp = static_cast<const float*>(lse.data);

  const size_t smem_kv = sizeof(float) * (2 * kWarps * dm.hd + 2 * kTile * (dm.hd + 1) + 2 * kTile);
  allow_smem(dkdv_kernel<T>, smem_kv);
  const dim3 grid_kv(ceil_div(dm.T, kWarps), (unsigned)dm.KV, (unsigned)dm.B);
  dkdv_kernel<T><<<grid_kv, kThreads, smem_kv, cuda_stream()>>>(qp, kp, vp, dop, lp, D, static_cast<T*>(dk.data),
                                                                  static_cast<T*>(dv.data), dm);
  CUDA_CHECK_LAUNCH();

  const size_t smem_q = sizeof(float) * (2 * kWarps * dm.hd + 2 * kTile * (dm.hd + 1));
  allow_smem(dq_kernel<T>, smem_q);
  const dim3 grid_q(ceil_div(dm.T, kWarps), (unsigned)dm.H, (unsigned)dm.B);
  dq_kernel<T><<<grid_q, kThreads, smem_q, cuda_stream()>>>(qp, kp, vp, dop, lp, D, static_cast<T*>(dq.data), dm);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void fallback_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                      int64_t keys) {
  if (q.numel() == 0) return;
  if (q.dtype == DType::bf16)
    forward_impl<bf16>(q, k, v, out, lse, keys);
  else
    forward_impl<float>(q, k, v, out, lse, keys);
}

void fallback_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                       const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  if (q.numel() == 0) return;
  if (q.dtype == DType::bf16)
    backward_impl<bf16>(q, k, v, out, lse, dout, dq, dk, dv);
  else
    backward_impl<float>(q, k, v, out, lse, dout, dq, dk, dv);
}

}  // namespace lingua::attention_internal
