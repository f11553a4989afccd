// Fused output projection + cross-entropy on the GPU (see cross_entropy.h for the contract).
//
// Per chunk of rows:
//   1. logits[rows, V] (bf16) = x_chunk W^T          linear_forward_cuda (cuBLASLt, fp32 accumulation)
//   2. ce_rows_kernel, one block per row: online max / sum of exp in fp32 over the bf16 logits,
//      nll = max + log(sum) - logit[target]; then, with gradients, the row is overwritten in place
//      by dlogits = (softmax - onehot) * grad_scale in bf16 (zeros for ignored rows).
//   3. dx_chunk (bf16) = dlogits W, dw (f32) += dlogits^T x_chunk   linear_backward_cuda
// The per-row nll go to `nll` (or a scratch buffer); one block then sums them in a fixed order in
// double, and that sum and the bad-target flag are copied to the host once, at the end (or, for
// output_cross_entropy_sum, the sum goes to the caller's device double and nothing is read back).
//
// Determinism: the GEMMs are deterministic (see linear/cuda.cu); the row kernel reduces each row
// with a fixed strided split and a fixed shuffle / shared-memory tree; the loss sum is one block
// with a fixed tree. The only atomic is an integer atomicMin on the first bad row (order-independent).
#include <climits>
#include <cmath>
#include <cstdint>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/cross_entropy/cross_entropy.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

constexpr int kRowThreads = 256;
constexpr int kSumThreads = 1024;
constexpr size_t kMaxLogitsBytes = size_t(256) << 20;  // bf16 logits of one chunk

// What the host reads back at the end of a call.
struct Result {
  double sum;                   // sum of nll over all rows (ignored rows hold 0)
  unsigned long long bad_row;   // first row whose target is >= V; ULLONG_MAX when none
};

__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xFFFF0000u); }
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
         ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

// Online softmax statistics: m = running max, s = sum of exp(v - m).
__device__ __forceinline__ void online_add(float& m, float& s, float v) {
  if (v > m) {
    s = s * expf(m - v) + 1.0f;  // m = -inf at first: s = 0 * 0 + 1
    m = v;
  } else {
    s += expf(v - m);
  }
}

__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  float r = 0.0f;
  if (m != -INFINITY) r += s * expf(m - mx);  // a side with no elements contributes nothing
  if (m2 != -INFINITY) r += s2 * expf(m2 - mx);
  m = mx;
  s = r;
}

// Every thread ends with the block's (m, s). The xor butterfly gives all lanes the same value
// (merge is commutative), then each thread merges the warps' results in warp order.
__device__ void block_merge(float& m, float& s) {
  __shared__ float wm[kRowThreads / 32], ws[kRowThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xFFFFFFFFu, m, o), s2 = __shfl_xor_sync(0xFFFFFFFFu, s, o);
    online_merge(m, s, m2, s2);
  }
  if ((threadIdx.x & 31) == 0) wm[threadIdx.x >> 5] = m, ws[threadIdx.x >> 5] = s;
  __syncthreads();
  m = wm[0], s = ws[0];
#pragma unroll
  for (int w = 1; w < kRowThreads / 32; ++w) online_merge(m, s, wm[w], ws[w]);
}

// One block per row of the chunk. logits rows are V bf16; when V % 8 == 0 every row starts
// 16-byte aligned (the buffer is) and is read / written as uint4.
__global__ void __launch_bounds__(kRowThreads)
    ce_rows_kernel(bf16* __restrict__ logits, int64_t V, const int32_t* __restrict__ targets, float* __restrict__ nll,
                   float grad_scale, int want_grad, int64_t row0, unsigned long long* __restrict__ bad_row) {
  const int64_t r = blockIdx.x;
  bf16* l = logits + r * V;
  const int32_t t = targets[r];
  const bool vec = V % 8 == 0;
  const int64_t nvec = vec ? V / 8 : 0;
  uint4* lv = reinterpret_cast<uint4*>(l);

  if (t < 0 || t >= V) {  // ignored (or invalid: flagged, then treated as ignored)
    if (threadIdx.x == 0) {
      if (t >= V && bad_row) atomicMin(bad_row, (unsigned long long)(row0 + r));
      nll[r] = 0.0f;
    }
    if (want_grad) {
      if (vec)
        for (int64_t i = threadIdx.x; i < nvec; i += kRowThreads) lv[i] = make_uint4(0, 0, 0, 0);
      else
        for (int64_t j = threadIdx.x; j < V; j += kRowThreads) l[j] = __float2bfloat16_rn(0.0f);
    }
    return;  // uniform across the block: no barrier is skipped by part of it
  }

  // Read before the barrier in block_merge: no thread overwrites the row before that.
  const float target_logit = __bfloat162float(l[t]);
  float m = -INFINITY, s = 0.0f;
  if (vec) {
    for (int64_t i = threadIdx.x; i < nvec; i += kRowThreads) {
      const uint4 u = lv[i];
      online_add(m, s, bf16_lo(u.x)), online_add(m, s, bf16_hi(u.x));
      online_add(m, s, bf16_lo(u.y)), online_add(m, s, bf16_hi(u.y));
      online_add(m, s, bf16_lo(u.z)), online_add(m, s, bf16_hi(u.z));
      online_add(m, s, bf16_lo(u.w)), online_add(m, s, bf16_hi(u.w));
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += kRowThreads) online_add(m, s, __bfloat162float(l[j]));
  }
  block_merge(m, s);
  if (threadIdx.x == 0) nll[r] = m + logf(s) - target_logit;
  if (!want_grad) return;

  // dlogits = (exp(v - m) / s - onehot) * grad_scale
  const float scale = grad_scale / s;
  auto grad = [&](float v, int64_t j) {
    float g = expf(v - m) * scale;
    if (j == t) g -= grad_scale;
    return g;
  };
  if (vec) {
    for (int64_t i = threadIdx.x; i < nvec; i += kRowThreads) {
      const uint4 u = lv[i];
      const int64_t j = i * 8;
      uint4 o;
      o.x = pack_bf16(grad(bf16_lo(u.x), j + 0), grad(bf16_hi(u.x), j + 1));
      o.y = pack_bf16(grad(bf16_lo(u.y), j + 2), grad(bf16_hi(u.y), j + 3));
      o.z = pack_bf16(grad(bf16_lo(u.z), j + 4), grad(bf16_hi(u.z), j + 5));
      o.w = pack_bf16(grad(bf16_lo(u.w), j + 6), grad(bf16_hi(u.w), j + 7));
      lv[i] = o;
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += kRowThreads) l[j] = __float2bfloat16_rn(grad(__bfloat162float(l[j]), j));
  }
}

// One block: thread i sums rows i, i + 1024, ... in double, then a fixed shared-memory tree;
// *out = (accumulate ? *out : 0) + total.
__global__ void __launch_bounds__(kSumThreads)
    sum_kernel(const float* __restrict__ nll, int64_t N, double* out, int accumulate) {
  __shared__ double sh[kSumThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += kSumThreads) acc += (double)nll[i];
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kSumThreads / 2; o > 0; o >>= 1) {
    if ((int)threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = accumulate ? *out + sh[0] : sh[0];
}

size_t round_up(size_t bytes) { return (bytes + 255) & ~size_t(255); }

// Queues the whole computation on the stream. sum_device null: the sum goes to the returned
// Result (in the scratch) and bad targets are flagged there; else *sum_device = (accumulate ?
// *sum_device : 0) + sum and bad targets are not tracked (null returned). Null also when N == 0.
Result* queue_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                            float grad_scale, const Tensor& dx, const Tensor& dw, int64_t max_chunk_rows,
                            double* sum_device, bool accumulate) {
  const char* op = "output_cross_entropy";
  check_cuda_arg(op, "x", x, {DType::bf16}, {-1, -1});
  const int64_t N = x.size(0), D = x.size(1);
  check_cuda_arg(op, "w", w, {DType::bf16}, {-1, D});
  const int64_t V = w.size(0);
  check_cuda_arg(op, "targets", targets, {DType::i32}, {N});
  if (is_given(nll)) check_cuda_arg(op, "nll", nll, {DType::f32}, {N});
  if (is_given(dx)) check_cuda_arg(op, "dx", dx, {DType::bf16}, {N, D});
  if (is_given(dw)) check_cuda_arg(op, "dw", dw, {DType::f32}, {V, D});
  LINGUA_CHECK(V > 0 && D > 0, op, ": empty vocabulary or model dimension (w ", w.str(), ")");
  LINGUA_CHECK(V <= INT32_MAX, op, ": vocabulary of ", V, " entries is too large");
  cudaStream_t stream = cuda_stream();
  if (N == 0) {
    if (sum_device && !accumulate) CUDA_CHECK(cudaMemsetAsync(sum_device, 0, sizeof(double), stream));
    return nullptr;
  }

  const bool want_grad = is_given(dx) || is_given(dw);
  int64_t C = std::max<int64_t>(1, (int64_t)(kMaxLogitsBytes / (2 * (size_t)V)));
  if (C > 128) C -= C % 128;
  if (max_chunk_rows > 0) C = std::min(C, max_chunk_rows);
  C = std::min(C, N);

  // cuda_op_scratch (shared by the ops, see cuda.h): [Result][per-row nll when `nll` is not
  // given][logits of one chunk], 256-byte aligned.
  const size_t result_bytes = round_up(sizeof(Result));
  const size_t nll_bytes = is_given(nll) ? 0 : round_up((size_t)N * sizeof(float));
  const size_t logits_bytes = round_up((size_t)C * (size_t)V * sizeof(bf16));
  char* base = static_cast<char*>(cuda_op_scratch(result_bytes + nll_bytes + logits_bytes));
  Result* result = reinterpret_cast<Result*>(base);
  float* nll_rows = is_given(nll) ? static_cast<float*>(nll.data) : reinterpret_cast<float*>(base + result_bytes);
  bf16* logits = reinterpret_cast<bf16*>(base + result_bytes + nll_bytes);

  unsigned long long* bad_row = sum_device ? nullptr : &result->bad_row;
  if (bad_row) CUDA_CHECK(cudaMemsetAsync(bad_row, 0xFF, sizeof(*bad_row), stream));
  const bf16* xs = static_cast<const bf16*>(x.data);
  const int32_t* tgt = static_cast<const int32_t*>(targets.data);
  for (int64_t n0 = 0; n0 < N; n0 += C) {
    const int64_t rows = std::min(C, N - n0);
    const Tensor xc(const_cast<bf16*>(xs + n0 * D), {rows, D}, DType::bf16, Device::cuda);
    const Tensor lg(logits, {rows, V}, DType::bf16, Device::cuda);
    linear_forward_cuda(xc, w, lg);
    ce_rows_kernel<<<(unsigned)rows, kRowThreads, 0, stream>>>(logits, V, tgt + n0, nll_rows + n0, grad_scale,
                                                               want_grad ? 1 : 0, n0, bad_row);
    CUDA_CHECK_LAUNCH();
    if (want_grad) {
      const Tensor dxc = is_given(dx) ? Tensor(static_cast<bf16*>(dx.data) + n0 * D, {rows, D}, DType::bf16, Device::cuda)
                                      : Tensor();
      linear_backward_cuda(xc, w, lg, dxc, dw, false);
    }
  }
  sum_kernel<<<1, kSumThreads, 0, stream>>>(nll_rows, N, sum_device ? sum_device : &result->sum,
                                            sum_device && accumulate ? 1 : 0);
  CUDA_CHECK_LAUNCH();
  return sum_device ? nullptr : result;
}

}  // namespace

double output_cross_entropy_cuda(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                                 float grad_scale, const Tensor& dx, const Tensor& dw, int64_t max_chunk_rows) {
  const char* op = "output_cross_entropy";
  Result* result = queue_cross_entropy(x, w, targets, nll, grad_scale, dx, dw, max_chunk_rows, nullptr, false);
  if (!result) return 0.0;  // no rows
  const int64_t V = w.size(0);
  const int32_t* tgt = static_cast<const int32_t*>(targets.data);
  Result host{};
  copy_to_host(&host, result, sizeof host);  // synchronises the stream
  if (host.bad_row != ~0ull) {
    int32_t bad = 0;
    copy_to_host(&bad, tgt + host.bad_row, sizeof bad);
    fail(op, ": target ", bad, " at row ", host.bad_row, " is outside the vocabulary [0, ", V, ")");
  }
  return host.sum;
}

void output_cross_entropy_sum_cuda(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                                   float grad_scale, const Tensor& dx, const Tensor& dw, double* loss_sum_device,
                                   bool accumulate, int64_t max_chunk_rows) {
  LINGUA_CHECK(loss_sum_device != nullptr, "output_cross_entropy_sum: no device address for the loss sum");
  queue_cross_entropy(x, w, targets, nll, grad_scale, dx, dw, max_chunk_rows, loss_sum_device, accumulate);
}

}  // namespace lingua
