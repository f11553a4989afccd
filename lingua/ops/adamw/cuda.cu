// AdamW and gradient-norm reductions on CUDA (see adamw.h).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

// ---- AdamW ----

struct AdamWConsts {
  float one_minus_b1, b2, one_minus_b2, eps, decay, step_size, inv_sqrt_bc2, grad_scale;
};

// The CPU loop's expression, every operation rounded separately (no FMA contraction), so that the
// GPU and the CPU agree bit for bit.
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, const AdamWConsts& k,
                                              float gs) {
  const float gi = __fmul_rn(g, gs);
  const float mi = __fadd_rn(m, __fmul_rn(k.one_minus_b1, __fsub_rn(gi, m)));
  const float vi = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(__fmul_rn(k.one_minus_b2, gi), gi));
  const float den = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), k.inv_sqrt_bc2), k.eps);
  m = mi;
  v = vi;
  p = __fsub_rn(__fmul_rn(p, k.decay), __fdiv_rn(__fmul_rn(k.step_size, mi), den));
}

__device__ __forceinline__ uint32_t bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

constexpr int kThreads = 256;

// The grad scale of this launch, and the step constants from step_device when given (the
// host-computed floats, as the by-value path passes them).
__device__ __forceinline__ float load_step(AdamWConsts& k, const float* grad_scale_device,
                                           const AdamWStepScalars* step_device) {
  if (step_device) {
    const AdamWStepScalars sc = *step_device;
    k.decay = sc.decay;
    k.step_size = sc.step_size;
    k.inv_sqrt_bc2 = sc.inv_sqrt_bc2;
  }
  return grad_scale_device ? __fmul_rn(k.grad_scale, *grad_scale_device) : k.grad_scale;
}

// Elements [i, i + 4): float4 accesses (and one 8-byte bf16 store); needs every pointer aligned.
__device__ __forceinline__ void adamw_group4(float* param, const float* grad, float* m, float* v, bf16* param_bf16,
                                             int64_t i, const AdamWConsts& k, float gs) {
  float4 p = *reinterpret_cast<const float4*>(param + i);
  const float4 g = *reinterpret_cast<const float4*>(grad + i);
  float4 mm = *reinterpret_cast<const float4*>(m + i);
  float4 vv = *reinterpret_cast<const float4*>(v + i);
  adamw_element(p.x, g.x, mm.x, vv.x, k, gs);
  adamw_element(p.y, g.y, mm.y, vv.y, k, gs);
  adamw_element(p.z, g.z, mm.z, vv.z, k, gs);
  adamw_element(p.w, g.w, mm.w, vv.w, k, gs);
  *reinterpret_cast<float4*>(param + i) = p;
  *reinterpret_cast<float4*>(m + i) = mm;
  *reinterpret_cast<float4*>(v + i) = vv;
  if (param_bf16)
    *reinterpret_cast<uint2*>(param_bf16 + i) =
        make_uint2(bf16_bits(p.x) | (bf16_bits(p.y) << 16), bf16_bits(p.z) | (bf16_bits(p.w) << 16));
}

// Elements [i, end) one by one.
__device__ __forceinline__ void adamw_range(float* param, const float* grad, float* m, float* v, bf16* param_bf16,
                                            int64_t i, int64_t end, const AdamWConsts& k, float gs) {
  for (int64_t j = i; j < end; ++j) {
    float p = param[j], mm = m[j], vv = v[j];
    adamw_element(p, grad[j], mm, vv, k, gs);
    param[j] = p;
    m[j] = mm;
    v[j] = vv;
    if (param_bf16) param_bf16[j] = __float2bfloat16_rn(p);
  }
}

// 4 elements per thread: float4 accesses (and one 8-byte bf16 store) when vec and the chunk is
// whole, else element by element.
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                 float* __restrict__ v, bf16* __restrict__ param_bf16, int64_t n, AdamWConsts k,
                 const float* __restrict__ grad_scale_device, const AdamWStepScalars* __restrict__ step_device,
                 bool vec) {
  const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
  if (i >= n) return;
  const float gs = load_step(k, grad_scale_device, step_device);
  if (isnan(gs)) return;  // a skipped step (uniform across the launch)
  if (vec && i + 4 <= n)
    adamw_group4(param, grad, m, v, param_bf16, i, k, gs);
  else
    adamw_range(param, grad, m, v, param_bf16, i, min(n, i + 4), k, gs);
}

// ---- row-sparse AdamW ----

// A block of kThreads threads is split into kThreads / tpr row slots of tpr threads (tpr: a power
// of two, 32..kThreads, about C / 4 so that a row's slot has about one group of 4 columns per
// thread); blockIdx.y picks a chunk of `chunk` columns (a multiple of 4 tpr). Slot s of block b
// updates row b * slots + s: it reads rows[r] and, when 0, exits at once (tpr >= 32, so whole
// warps exit together), else thread t takes the groups of 4 consecutive columns t, t + tpr, ... of
// its chunk, float4 when kVec (C % 4 == 0 and every pointer aligned), else element by element.
template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    adamw_rows_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                      float* __restrict__ v, bf16* __restrict__ param_bf16, const int32_t* __restrict__ rows,
                      int64_t R, int64_t C, int tpr, int64_t chunk, AdamWConsts k,
                      const float* __restrict__ grad_scale_device, const AdamWStepScalars* __restrict__ step_device) {
  const int slots = kThreads / tpr;
  const int64_t r = (int64_t)blockIdx.x * slots + threadIdx.x / tpr;
  if (r >= R || rows[r] == 0) return;
  const float gs = load_step(k, grad_scale_device, step_device);
  if (isnan(gs)) return;  // a skipped step
  const int64_t c0 = (int64_t)blockIdx.y * chunk, c1 = min(C, c0 + chunk);
  const int64_t row = r * C;
  for (int64_t c = c0 + (int64_t)(threadIdx.x % tpr) * 4; c < c1; c += (int64_t)tpr * 4) {
    if (kVec)  // C % 4 == 0: the group is whole
      adamw_group4(param, grad, m, v, param_bf16, row + c, k, gs);
    else
      adamw_range(param, grad, m, v, param_bf16, row + c, row + min(c1, c + 4), k, gs);
  }
}

// rows[ids[n]] = 1; ids outside [0, R) are skipped (validated by the caller on the host).
__global__ void mark_rows_kernel(const int32_t* __restrict__ ids, int64_t N, int32_t* __restrict__ rows, int64_t R) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int32_t id = ids[n];
  if (id >= 0 && id < R) rows[id] = 1;
}

// ---- sum of squares ----

// Block b sums x[b C, (b + 1) C) in double: thread t takes the groups of 4 consecutive elements
// g = t, t + kThreads, ... (adding their squares in element order), then a fixed tree over the
// block. The float4 and scalar paths add the same values in the same order, so the result does not
// depend on x's alignment.
constexpr int kGroupsPerThread = 16;
constexpr int64_t kChunk = (int64_t)kThreads * 4 * kGroupsPerThread;  // 16384 elements per block

__device__ __forceinline__ double block_sum(double s, double* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) total += red[w];  // every thread, in warp order
  return total;
}

__global__ void __launch_bounds__(kThreads)
    sum_squares_partial_kernel(const float* __restrict__ x, int64_t n, bool vec, double* __restrict__ partial) {
  __shared__ double red[kThreads / 32];
  const int64_t base = (int64_t)blockIdx.x * kChunk;
  double s = 0.0;
#pragma unroll 4
  for (int q = 0; q < kGroupsPerThread; ++q) {
    const int64_t i = base + ((int64_t)q * kThreads + threadIdx.x) * 4;
    if (vec && i + 4 <= n) {
      const float4 a = *reinterpret_cast<const float4*>(x + i);
      s += (double)a.x * a.x;
      s += (double)a.y * a.y;
      s += (double)a.z * a.z;
      s += (double)a.w * a.w;
    } else {
      for (int64_t j = i; j < n && j < i + 4; ++j) s += (double)x[j] * x[j];
    }
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Row-masked sum of squares: block (bx, by) covers rows [bx kRowsPerSumBlock, +kRowsPerSumBlock),
// one warp per row, and columns [by kSumColChunk, +kSumColChunk). Lane l of a touched row's warp
// takes the groups of 4 consecutive columns l, l + 32, ... of the chunk (their squares added in
// column order), then the warp's fixed butterfly; an untouched (or absent) row gives 0; thread 0
// adds the warps' sums in warp order into partial[by * gridDim.x + bx]. float4 and scalar paths
// add the same values in the same order: the result depends on R, C, the mask and the values only.
constexpr int kRowsPerSumBlock = kThreads / 32;

// s + x^2, one rounding: written out so that both paths below are the same instructions.
__device__ __forceinline__ double add_square(double s, float x) { return fma((double)x, (double)x, s); }

constexpr int64_t kSumColChunk = 32 * 4 * 64;  // 8192 columns: one chunk for hidden sizes up to 8192

__global__ void __launch_bounds__(kThreads)
    sum_squares_rows_partial_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, int64_t R,
                                    int64_t C, bool vec, double* __restrict__ partial) {
  __shared__ double red[kRowsPerSumBlock];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * kRowsPerSumBlock + warp;
  double s = 0.0;
  if (r < R && rows[r] != 0) {  // warp-uniform
    const int64_t c0 = (int64_t)blockIdx.y * kSumColChunk, c1 = min(C, c0 + kSumColChunk);
    const float* xr = x + r * C;
    for (int64_t c = c0 + (int64_t)lane * 4; c < c1; c += 32 * 4) {
      if (vec) {  // C % 4 == 0 and x aligned: the group is whole
        const float4 a = *reinterpret_cast<const float4*>(xr + c);
        s = add_square(s, a.x);
        s = add_square(s, a.y);
        s = add_square(s, a.z);
        s = add_square(s, a.w);
      } else {
        for (int64_t j = c; j < c1 && j < c + 4; ++j) s = add_square(s, xr[j]);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  }
  if (lane == 0) red[warp] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kRowsPerSumBlock; ++w) total += red[w];
    partial[(int64_t)blockIdx.y * gridDim.x + blockIdx.x] = total;
  }
}

// One block: thread t sums partial[t], partial[t + kThreads], ... in order, then the fixed tree;
// *out = (accumulate ? *out : 0) + total.
__global__ void __launch_bounds__(kThreads)
    sum_squares_final_kernel(const double* __restrict__ partial, int64_t blocks, double* out, bool accumulate) {
  __shared__ double red[kThreads / 32];
  double s = 0.0;
  for (int64_t b = threadIdx.x; b < blocks; b += kThreads) s += partial[b];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *out = accumulate ? *out + s : s;
}

__global__ void clip_coefficient_kernel(const double* __restrict__ sq, double max_norm, float* __restrict__ coef,
                                        double* __restrict__ norm_out) {
  const double norm = sqrt(*sq);
  float c = 1.0f;
  if (max_norm > 0) {
    const double r = max_norm / (norm + 1e-6);
    c = r < 1.0 ? (float)r : 1.0f;
  }
  *coef = c;
  if (norm_out) *norm_out = norm;
}

struct GuardedGroups {
  const double* sq[kMaxGuardedGroups];
  float* coef[kMaxGuardedGroups];
  int n;
};

__global__ void skip_step_if_nonfinite_kernel(GuardedGroups g) {
  bool finite = true;
  for (int i = 0; i < g.n; ++i) finite = finite && isfinite(*g.sq[i]);
  if (!finite)
    for (int i = 0; i < g.n; ++i) *g.coef[i] = __int_as_float(0x7fc00000);  // quiet NaN
}

// Persistent scratch for the per-block partial sums: grown (synchronising the stream, then
// cudaMalloc) only when a tensor needs more than all earlier ones (the first optimizer step sizes
// it for the largest gradient). Shared by all calls, which run in order on cuda_stream().
double* partial_scratch(int64_t blocks) {
  static DeviceBuffer* buf = new DeviceBuffer();  // never freed
  const size_t bytes = (size_t)std::max<int64_t>(blocks, 1) * sizeof(double);
  return static_cast<double*>(cuda_grow_scratch(*buf, bytes, 64u << 10, "sum_squares"));
}

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// The kernel constants, from the host constants exactly as the CPU path computes them (when
// step_device is given, decay, step_size and inv_sqrt_bc2 are read from it in the kernel instead,
// and lr, step and weight_decay are not read).
AdamWConsts adamw_consts(const AdamWHyper& h) {
  const AdamWStepScalars sc = h.step_device ? AdamWStepScalars{0, 0, 0} : adamw_step_scalars(h);
  AdamWConsts k;
  k.one_minus_b1 = 1.0f - h.beta1;
  k.b2 = h.beta2;
  k.one_minus_b2 = 1.0f - h.beta2;
  k.eps = h.eps;
  k.decay = sc.decay;
  k.step_size = sc.step_size;
  k.inv_sqrt_bc2 = sc.inv_sqrt_bc2;
  k.grad_scale = h.grad_scale;
  return k;
}

}  // namespace

void adamw_update_cuda(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWHyper& h,
                       const Tensor& param_bf16) {
  const char* op = "adamw_update";
  check_cuda_arg(op, "param", param, {DType::f32}, {-1});
  const int64_t n = param.size(0);
  check_cuda_arg(op, "grad", grad, {DType::f32}, {n});
  check_cuda_arg(op, "m", m, {DType::f32}, {n});
  check_cuda_arg(op, "v", v, {DType::f32}, {n});
  const bool with_bf16 = is_given(param_bf16);
  if (with_bf16) check_cuda_arg(op, "param_bf16", param_bf16, {DType::bf16}, {n});
  const AdamWConsts k = adamw_consts(h);
  if (n == 0) return;
  const bool vec = aligned(param.data, 16) && aligned(grad.data, 16) && aligned(m.data, 16) && aligned(v.data, 16) &&
                   (!with_bf16 || aligned(param_bf16.data, 8));
  adamw_kernel<<<ceil_div(n, 4LL * kThreads), kThreads, 0, cuda_stream()>>>(
      param.f32(), grad.f32(), m.f32(), v.f32(), with_bf16 ? static_cast<bf16*>(param_bf16.data) : nullptr, n, k,
      h.grad_scale_device, h.step_device, vec);
  CUDA_CHECK_LAUNCH();
}

void sum_squares_device_cuda(const Tensor& x, double* sq_device, bool accumulate) {
  const char* op = "sum_squares";
  check_cuda_arg(op, "x", x, {DType::f32}, {-1});
  LINGUA_CHECK(sq_device != nullptr, op, ": no device address for the result");
  const int64_t n = x.size(0);
  const int64_t blocks = (n + kChunk - 1) / kChunk;
  LINGUA_CHECK(blocks < INT32_MAX, op, ": x is too large (", x.str(), ")");
  double* partial = partial_scratch(blocks);
  if (blocks > 0) {
    sum_squares_partial_kernel<<<(unsigned)blocks, kThreads, 0, cuda_stream()>>>(
        static_cast<const float*>(x.data), n, aligned(x.data, 16), partial);
    CUDA_CHECK_LAUNCH();
  }
  sum_squares_final_kernel<<<1, kThreads, 0, cuda_stream()>>>(partial, blocks, sq_device, accumulate);
  CUDA_CHECK_LAUNCH();
}

double sum_squares_cuda(const Tensor& x) {
  static DeviceBuffer* result = new DeviceBuffer(sizeof(double));  // never freed
  sum_squares_device_cuda(x, result->as<double>(), false);
  double s = 0;
  copy_to_host(&s, result->data(), sizeof s);  // synchronises
  return s;
}

void mark_rows_cuda(const Tensor& ids, const Tensor& rows) {
  const char* op = "mark_rows";
  check_cuda_arg(op, "ids", ids, {DType::i32}, {-1});
  check_cuda_arg(op, "rows", rows, {DType::i32}, {-1});
  const int64_t N = ids.size(0), R = rows.size(0);
  if (N == 0) return;
  LINGUA_CHECK(N < (int64_t)INT32_MAX * kThreads, op, ": too many ids (", ids.str(), ")");
  mark_rows_kernel<<<ceil_div(N, kThreads), kThreads, 0, cuda_stream()>>>(ids.i32(), N, rows.i32(), R);
  CUDA_CHECK_LAUNCH();
}

void adamw_update_rows_cuda(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                            const Tensor& rows, const AdamWHyper& h, const Tensor& param_bf16) {
  const char* op = "adamw_update_rows";
  check_cuda_arg(op, "param", param, {DType::f32}, {-1, -1});
  const int64_t R = param.size(0), C = param.size(1);
  check_cuda_arg(op, "grad", grad, {DType::f32}, {R, C});
  check_cuda_arg(op, "m", m, {DType::f32}, {R, C});
  check_cuda_arg(op, "v", v, {DType::f32}, {R, C});
  check_cuda_arg(op, "rows", rows, {DType::i32}, {R});
  const bool with_bf16 = is_given(param_bf16);
  if (with_bf16) check_cuda_arg(op, "param_bf16", param_bf16, {DType::bf16}, {R, C});
  const AdamWConsts k = adamw_consts(h);
  if (R == 0 || C == 0) return;
  // Threads per row: the power of two in [32, kThreads] nearest above C / 4 (one group of 4
  // columns per thread); the rest of a chunk's columns are looped over, 4 groups per thread.
  int tpr = 32;
  while (tpr < kThreads && (int64_t)tpr * 4 < C) tpr *= 2;
  const int64_t slots = kThreads / tpr, chunk = (int64_t)tpr * 4 * 4;
  const int64_t row_blocks = (R + slots - 1) / slots, col_chunks = (C + chunk - 1) / chunk;
  LINGUA_CHECK(row_blocks <= INT32_MAX && col_chunks <= 65535, op, ": param is too large (", param.str(), ")");
  const bool vec = C % 4 == 0 && aligned(param.data, 16) && aligned(grad.data, 16) && aligned(m.data, 16) &&
                   aligned(v.data, 16) && (!with_bf16 || aligned(param_bf16.data, 8));
  const dim3 grid((unsigned)row_blocks, (unsigned)col_chunks);
  bf16* pb = with_bf16 ? static_cast<bf16*>(param_bf16.data) : nullptr;
  if (vec)
    adamw_rows_kernel<true><<<grid, kThreads, 0, cuda_stream()>>>(param.f32(), grad.f32(), m.f32(), v.f32(), pb,
                                                                  rows.i32(), R, C, tpr, chunk, k,
                                                                  h.grad_scale_device, h.step_device);
  else
    adamw_rows_kernel<false><<<grid, kThreads, 0, cuda_stream()>>>(param.f32(), grad.f32(), m.f32(), v.f32(), pb,
                                                                   rows.i32(), R, C, tpr, chunk, k,
                                                                   h.grad_scale_device, h.step_device);
  CUDA_CHECK_LAUNCH();
}

void sum_squares_rows_device_cuda(const Tensor& x, const Tensor& rows, double* sq_device, bool accumulate) {
  const char* op = "sum_squares_rows";
  check_cuda_arg(op, "x", x, {DType::f32}, {-1, -1});
  const int64_t R = x.size(0), C = x.size(1);
  check_cuda_arg(op, "rows", rows, {DType::i32}, {R});
  LINGUA_CHECK(sq_device != nullptr, op, ": no device address for the result");
  const int64_t row_blocks = (R + kRowsPerSumBlock - 1) / kRowsPerSumBlock;
  const int64_t col_chunks = (C + kSumColChunk - 1) / kSumColChunk;
  LINGUA_CHECK(row_blocks <= INT32_MAX && col_chunks <= 65535 && row_blocks * col_chunks < INT32_MAX, op,
               ": x is too large (", x.str(), ")");
  const int64_t blocks = row_blocks * col_chunks;
  double* partial = partial_scratch(blocks);  // shared with sum_squares_device: used in stream order
  if (blocks > 0) {
    const dim3 grid((unsigned)row_blocks, (unsigned)col_chunks);
    sum_squares_rows_partial_kernel<<<grid, kThreads, 0, cuda_stream()>>>(
        static_cast<const float*>(x.data), rows.i32(), R, C, C % 4 == 0 && aligned(x.data, 16), partial);
    CUDA_CHECK_LAUNCH();
  }
  sum_squares_final_kernel<<<1, kThreads, 0, cuda_stream()>>>(partial, blocks, sq_device, accumulate);
  CUDA_CHECK_LAUNCH();
}

double sum_squares_rows_cuda(const Tensor& x, const Tensor& rows) {
  static DeviceBuffer* result = new DeviceBuffer(sizeof(double));  // never freed
  sum_squares_rows_device_cuda(x, rows, result->as<double>(), false);
  double s = 0;
  copy_to_host(&s, result->data(), sizeof s);  // synchronises
  return s;
}

void clip_coefficient_device_cuda(const double* sq_device, double max_norm, float* coef_device, double* norm_device) {
  LINGUA_CHECK(sq_device != nullptr && coef_device != nullptr,
               "clip_coefficient_device: no device address for the sum of squares or the coefficient");
  clip_coefficient_kernel<<<1, 1, 0, cuda_stream()>>>(sq_device, max_norm, coef_device, norm_device);
  CUDA_CHECK_LAUNCH();
}

void skip_step_if_nonfinite_device_cuda(const double* const* sq_device, float* const* coef_device, int n) {
  GuardedGroups g{};
  g.n = n;
  for (int i = 0; i < n; ++i) {
    LINGUA_CHECK(sq_device[i] && coef_device[i], "skip_step_if_nonfinite_device: group ", i, " has no device address");
    g.sq[i] = sq_device[i];
    g.coef[i] = coef_device[i];
  }
  skip_step_if_nonfinite_kernel<<<1, 1, 0, cuda_stream()>>>(g);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
