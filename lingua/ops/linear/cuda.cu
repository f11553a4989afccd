// Linear layer on the GPU: cuBLASLt GEMMs with fp32 accumulation.
//
// Layout. Tensors are row-major; cuBLAS is column-major. A row-major [r, c] matrix is, read
// column-major, its transpose [c, r] with leading dimension c. So each product is computed in its
// transposed form (C^T = B^T A^T), which needs no copies:
//   forward  y[N, out] = x W^T (+ r) -> y^T[out, N] = op_T(W) x^T (+ r^T) (m = out, n = N, k = in)
//   dx       dx[N, in] = dy W      ->  dx^T[in, N]  = W^T dy^T        (m = in,  n = N,   k = out)
//   dw       dW[out, in] += dy^T x ->  dW^T[in, out] += x^T op_T(dy^T) (m = in,  n = out, k = N)
//
// cuBLASLt computes D = alpha op(A) op(B) + beta C. D is the output; C is read when beta = 1: the
// output itself (accumulate_dx, dw, an in-place residual) or a separate residual buffer. C and D
// always share one layout (type, sizes, ld), which cuBLASLt requires of C != D; out of place, C and
// D get two (equal) layout descriptors and the algorithm must report OUT_OF_PLACE_RESULT_SUPPORT.
//
// Algorithm choice and determinism. For each problem (sizes, transposes, dtypes, leading
// dimensions, the alignment of the A, B, C and D pointers, and whether C is D)
// cublasLtMatmulAlgoGetHeuristic picks an algorithm once; the plan (descriptors + algorithm) is
// cached for the life of the process, so a problem always runs the same kernel. cuBLAS documents that a given algorithm gives bitwise-identical
// results run to run on one GPU model when one stream is used and the workspace is the caller's
// (cuda_context().workspace, a fixed size). On top of that the heuristic is restricted to split-K
// reduction schemes NONE and COMPUTE_TYPE (CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, and the
// returned algorithm's CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME is checked): partial sums, if any,
// go to the fp32 workspace and a separate kernel reduces them in a fixed order. INPLACE and
// OUTPUT_TYPE (partials kept in the output type, i.e. bf16) are excluded for precision.
//
// Problems cuBLASLt has no algorithm for (it has them for the odd sizes we tested, but nothing
// guarantees it) run a simple tiled kernel: one thread per output element sums over k in order.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>

#include "lingua/core/cuda_utils.cuh"
#include "lingua/core/profiler.h"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/linear/gemm.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

std::atomic<bool> g_force_fallback{false};
std::atomic<uint64_t> g_fallback_count{0};

cudaDataType_t cuda_type(DType d) { return d == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F; }

// The largest power of two (at most 256) dividing the address: the alignment an algorithm may rely on.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}


struct Plan {
  bool fallback = true;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;  // d == c when C is D
  cublasLtMatmulAlgo_t algo{};
};

using PlanKey = std::array<int64_t, 19>;

// beta is not a heuristic input (any algorithm serves any beta), so it is not part of the key.
PlanKey plan_key(const Gemm& g) {
  return {g.m, g.n, g.k, g.ta, g.tb, (int64_t)g.ab, (int64_t)g.c, g.lda, g.ldb, g.ldc,
          alignment_of(g.A), alignment_of(g.B), alignment_of(g.C), alignment_of(g.D), g.C == g.D,
          g.batch, g.stride_a, g.stride_b, g.stride_c};
}

void destroy_plan(Plan& p) {
  if (p.d != p.c) cublasLtMatrixLayoutDestroy(p.d);
  cublasLtMatrixLayoutDestroy(p.c);
  cublasLtMatrixLayoutDestroy(p.b);
  cublasLtMatrixLayoutDestroy(p.a);
  cublasLtMatmulDescDestroy(p.desc);
  p = Plan{};
}

Plan make_plan(const Gemm& g) {
  Plan p;
  CudaContext& ctx = cuda_context();
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  // Layouts describe the stored matrices: op(A) = A^T means A is stored [k, m].
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, cuda_type(g.ab), g.ta ? g.k : g.m, g.ta ? g.m : g.k, g.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, cuda_type(g.ab), g.tb ? g.n : g.k, g.tb ? g.k : g.n, g.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cuda_type(g.c), g.m, g.n, g.ldc));
  const bool in_place = g.C == g.D;
  if (in_place)
    p.d = p.c;  // one descriptor for both, as cuBLASLt's in-place rule asks
  else
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, cuda_type(g.c), g.m, g.n, g.ldc));  // equal to C's
  if (g.batch > 1) {
    const int32_t count = (int32_t)g.batch;
    auto batched = [&](cublasLtMatrixLayout_t l, int64_t stride) {
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
      CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    };
    batched(p.a, g.stride_a);
    batched(p.b, g.stride_b);
    batched(p.c, g.stride_c);
    if (!in_place) batched(p.d, g.stride_c);
  }

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = ctx.workspace_bytes;
  // NONE (no split-K, value 0) always passes the mask; COMPUTE_TYPE = fp32 partials in the
  // workspace, reduced by a separate kernel in a fixed order.
  const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  const uint32_t align_a = alignment_of(g.A), align_b = alignment_of(g.B), align_c = alignment_of(g.C),
                 align_d = alignment_of(g.D);
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof schemes));
  CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof align_a));
  CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof align_b));
  CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof align_c));
  CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof align_d));

  constexpr int kRequested = 8;
  cublasLtMatmulHeuristicResult_t results[kRequested] = {};
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, p.desc, p.a, p.b, p.c, p.d, pref, kRequested,
                                                           results, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(st);  // NOT_SUPPORTED: no algorithm, use the fallback
  for (int i = 0; st == CUBLAS_STATUS_SUCCESS && i < returned; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS || results[i].workspaceSize > ws) continue;
    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&results[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                             sizeof scheme, &written) == CUBLAS_STATUS_SUCCESS &&
        scheme != CUBLASLT_REDUCTION_SCHEME_NONE && scheme != CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)
      continue;
    if (!in_place) {  // the heuristic does not see the pointers: ask the algorithm (unknown = no)
      int32_t out_of_place = 0;
      if (cublasLtMatmulAlgoCapGetAttribute(&results[i].algo, CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT,
                                            &out_of_place, sizeof out_of_place, &written) != CUBLAS_STATUS_SUCCESS ||
          out_of_place == 0)
        continue;
    }
    p.algo = results[i].algo;
    p.fallback = false;
    break;
  }
  if (p.fallback) destroy_plan(p);
  return p;
}

// Plans are created once per problem and never freed; map nodes do not move, so a pointer to a
// plan stays valid after the lock is released.
const Plan& get_plan(const Gemm& g) {
  static std::mutex mu;
  static std::map<PlanKey, Plan> plans;
  const PlanKey key = plan_key(g);
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(g)).first;
  return it->second;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16* p, float v) { *p = __float2bfloat16_rn(v); }

// Fallback GEMM: 32 x 32 output tiles, blocks of 32 x 8 threads, each thread 4 outputs of one
// row i (column-major D, so threadIdx.x runs along the contiguous dimension). Each output is one
// fp32 sum over k in increasing order, then + beta C: deterministic. grid.x covers n, grid.y
// covers m. C may be D (each thread reads its element before writing it), hence no __restrict__.
constexpr int kTile = 32, kTileRows = 8;

template <class TA, class TC>
__global__ void __launch_bounds__(kTile* kTileRows)
    gemm_fallback_kernel(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const TA* __restrict__ A, int64_t lda,
                         const TA* __restrict__ B, int64_t ldb, const TC* C, TC* D, int64_t ldc, float beta,
                         int64_t stride_a, int64_t stride_b, int64_t stride_c) {
  A += blockIdx.z * stride_a, B += blockIdx.z * stride_b, D += blockIdx.z * stride_c;
  if (C) C += blockIdx.z * stride_c;
  __shared__ float As[kTile][kTile + 1];  // [kk][mm] = op(A)[i0 + mm, p0 + kk]
  __shared__ float Bs[kTile][kTile + 1];  // [kk][nn] = op(B)[p0 + kk, j0 + nn]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j0 = (int64_t)blockIdx.x * kTile, i0 = (int64_t)blockIdx.y * kTile;
  float acc[kTile / kTileRows] = {};
  for (int64_t p0 = 0; p0 < k; p0 += kTile) {
    for (int r = ty; r < kTile; r += kTileRows) {
      {  // threadIdx.x along A's contiguous dimension: i when stored [m, k], p when stored [k, m]
        const int mm = ta ? r : tx, kk = ta ? tx : r;
        const int64_t i = i0 + mm, p = p0 + kk;
        As[kk][mm] = (i < m && p < k) ? to_float(ta ? A[p + i * lda] : A[i + p * lda]) : 0.0f;
      }
      {  // B stored [k, n] (contiguous in p) or [n, k] (contiguous in j)
        const int nn = tb ? tx : r, kk = tb ? r : tx;
        const int64_t j = j0 + nn, p = p0 + kk;
        Bs[kk][nn] = (j < n && p < k) ? to_float(tb ? B[j + p * ldb] : B[p + j * ldb]) : 0.0f;
      }
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTile; ++kk) {
      const float a = As[kk][tx];
#pragma unroll
      for (int q = 0; q < kTile / kTileRows; ++q) acc[q] = fmaf(a, Bs[kk][ty + q * kTileRows], acc[q]);
    }
    __syncthreads();
  }
  const int64_t i = i0 + tx;
  if (i >= m) return;
#pragma unroll
  for (int q = 0; q < kTile / kTileRows; ++q) {
    const int64_t j = j0 + ty + q * kTileRows;
    if (j >= n) continue;
    const int64_t e = i + j * ldc;
    float v = acc[q];
    if (beta != 0.0f) v += beta * to_float(C[e]);  // beta == 0: C is not read (it may hold NaN)
    store(D + e, v);
  }
}

void run_fallback(const Gemm& g, float beta) {
  const int64_t grid_m = (g.m + kTile - 1) / kTile;
  LINGUA_CHECK(grid_m <= 65535, "linear (CUDA): fallback GEMM dimension ", g.m, " too large");
  LINGUA_CHECK(g.batch <= 65535, "linear (CUDA): fallback GEMM batch ", g.batch, " too large");
  const dim3 grid((unsigned)((g.n + kTile - 1) / kTile), (unsigned)grid_m, (unsigned)g.batch),
      block(kTile, kTileRows);
  cudaStream_t s = cuda_stream();
  if (g.ab == DType::f32) {
    LINGUA_ASSERT(g.c == DType::f32);
    gemm_fallback_kernel<float, float><<<grid, block, 0, s>>>(g.ta, g.tb, g.m, g.n, g.k, (const float*)g.A, g.lda,
                                                               (const float*)g.B, g.ldb, (const float*)g.C,
                                                               (float*)g.D, g.ldc, beta, g.stride_a, g.stride_b, g.stride_c);
  } else if (g.c == DType::f32) {
    gemm_fallback_kernel<bf16, float><<<grid, block, 0, s>>>(g.ta, g.tb, g.m, g.n, g.k, (const bf16*)g.A, g.lda,
                                                              (const bf16*)g.B, g.ldb, (const float*)g.C,
                                                              (float*)g.D, g.ldc, beta, g.stride_a, g.stride_b, g.stride_c);
  } else {
    gemm_fallback_kernel<bf16, bf16><<<grid, block, 0, s>>>(g.ta, g.tb, g.m, g.n, g.k, (const bf16*)g.A, g.lda,
                                                             (const bf16*)g.B, g.ldb, (const bf16*)g.C, (bf16*)g.D,
                                                             g.ldc, beta, g.stride_a, g.stride_b, g.stride_c);
  }
  CUDA_CHECK_LAUNCH();
  g_fallback_count.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

void gemm_cuda(const Gemm& g, float beta) {
  LINGUA_ASSERT(beta == 0.0f || beta == 1.0f);
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (g.k == 0) {  // an empty sum: D = beta C (single contiguous products only)
    LINGUA_CHECK(g.batch == 1 && g.ldc == g.m, "internal error: empty batched or strided GEMM");
    const size_t bytes = g.m * g.n * dtype_size(g.c);
    if (beta == 0.0f)
      CUDA_CHECK(cudaMemsetAsync(g.D, 0, bytes, cuda_stream()));
    else if (g.C != g.D)
      CUDA_CHECK(cudaMemcpyAsync(g.D, g.C, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
    return;
  }
  if (g_force_fallback.load(std::memory_order_relaxed)) return run_fallback(g, beta);
  const Plan& p = get_plan(g);
  if (p.fallback) return run_fallback(g, beta);
  CudaContext& ctx = cuda_context();
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(ctx.lt, p.desc, &alpha, g.A, p.a, g.B, p.b, &beta, g.C, p.c, g.D, p.d, &p.algo,
                              ctx.workspace, ctx.workspace_bytes, ctx.stream));
}

void linear_cuda_force_fallback(bool on) { g_force_fallback.store(on); }
uint64_t linear_cuda_fallback_count() { return g_fallback_count.load(); }

void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& residual) {
  const char* op = "linear_forward";
  check_cuda_arg(op, "x", x, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = x.size(0), in = x.size(1);
  check_cuda_arg(op, "w", w, {x.dtype}, {-1, in});
  const int64_t out = w.size(0);
  check_cuda_product_out(op, "y", y, x.dtype, {N, out});
  const bool add = is_given(residual);
  if (add) {
    check_cuda_arg(op, "residual", residual, {y.dtype}, {N, out});
    check_residual_aliasing(op, y, residual);
  }

  // y^T[out, N] = (W stored [in, out])^T (x^T stored [in, N]) (+ residual^T, beta = 1)
  Gemm g;
  g.ta = true, g.tb = false;
  g.m = out, g.n = N, g.k = in;
  g.ab = x.dtype, g.c = y.dtype;
  g.A = w.data, g.lda = in;
  g.B = x.data, g.ldb = in;
  g.C = add ? residual.data : y.data, g.D = y.data, g.ldc = out;
  gemm_cuda(g, add ? 1.0f : 0.0f);
}

void linear_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                          bool accumulate_dx) {
  const char* op = "linear_backward";
  check_cuda_arg(op, "x", x, {DType::bf16, DType::f32}, {-1, -1});
  const int64_t N = x.size(0), in = x.size(1);
  check_cuda_arg(op, "w", w, {x.dtype}, {-1, in});
  const int64_t out = w.size(0);
  check_cuda_arg(op, "dy", dy, {x.dtype}, {N, out});
  if (is_given(dx)) check_cuda_product_out(op, "dx", dx, x.dtype, {N, in});
  if (is_given(dw)) check_cuda_arg(op, "dw", dw, {DType::f32}, {out, in});

  if (is_given(dx)) {  // dx^T[in, N] = (W stored [in, out]) (dy^T stored [out, N])
    LINGUA_PROFILE_SCOPE("dx");
    Gemm g;
    g.ta = false, g.tb = false;
    g.m = in, g.n = N, g.k = out;
    g.ab = x.dtype, g.c = dx.dtype;
    g.A = w.data, g.lda = in;
    g.B = dy.data, g.ldb = out;
    g.C = g.D = dx.data, g.ldc = in;
    gemm_cuda(g, accumulate_dx ? 1.0f : 0.0f);
  }
  if (is_given(dw)) {  // dW^T[in, out] += (x^T stored [in, N]) (dy^T stored [out, N])^T
    LINGUA_PROFILE_SCOPE("dw");
    Gemm g;
    g.ta = false, g.tb = true;
    g.m = in, g.n = out, g.k = N;
    g.ab = x.dtype, g.c = DType::f32;
    g.A = x.data, g.lda = in;
    g.B = dy.data, g.ldb = out;
    g.C = g.D = dw.data, g.ldc = in;
    gemm_cuda(g, 1.0f);
  }
}

}  // namespace lingua
