// Block-diagonal linear layer on the GPU: each product is one batched cuBLASLt GEMM over the k
// blocks, reading the column blocks of x / dy / y in place (leading dimension k * block width,
// batch stride one block width). Row-major [r, c] is column-major [c, r] (see ops/linear/cuda.cu):
//   forward  y_c^T[o, N]  = op_T(W_c stored [i, o]) x_c^T[i, N]        (m = o, n = N, k = i)
//   dx       dx_c^T[i, N] = (W_c stored [i, o]) dy_c^T[o, N]           (m = i, n = N, k = o)
//   dw       dW_c^T[i, o] += x_c^T[i, N] op_T(dy_c^T stored [o, N])    (m = i, n = o, k = N)
#include "lingua/core/cuda_utils.cuh"
#include "lingua/core/profiler.h"
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/linear/gemm.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {
struct Blocks {
  int64_t k, o, i;
};
Blocks check_w(const char* op, const Tensor& w) {
  check_cuda_arg(op, "w", w, {DType::bf16, DType::f32}, {-1, -1, -1});
  const int64_t k = w.size(0), o = w.size(1), i = w.size(2);
  if (k < 1 || i < 1 || o < 1) fail(op, ": argument 'w' (", w.str(), ") has no blocks or empty ones");
  return {k, o, i};
}
}  // namespace

void blockdiag_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y) {
  const char* op = "blockdiag_forward";
  const Blocks b = check_w(op, w);
  check_cuda_arg(op, "x", x, {w.dtype}, {-1, b.k * b.i});
  const int64_t N = x.size(0);
  check_cuda_product_out(op, "y", y, x.dtype, {N, b.k * b.o});
  Gemm g;
  g.ta = true;
  g.m = b.o, g.n = N, g.k = b.i;
  g.ab = x.dtype, g.c = y.dtype;
  g.A = w.data, g.lda = b.i, g.stride_a = b.o * b.i;
  g.B = x.data, g.ldb = b.k * b.i, g.stride_b = b.i;
  g.C = g.D = y.data, g.ldc = b.k * b.o, g.stride_c = b.o;
  g.batch = b.k;
  gemm_cuda(g, 0.0f);
}

void blockdiag_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                             bool accumulate_dx) {
  const char* op = "blockdiag_backward";
  const Blocks b = check_w(op, w);
  check_cuda_arg(op, "dy", dy, {w.dtype}, {-1, b.k * b.o});
  const int64_t N = dy.size(0);
  if (is_given(dx)) check_cuda_product_out(op, "dx", dx, w.dtype, {N, b.k * b.i});
  if (is_given(dw)) {
    check_cuda_arg(op, "x", x, {w.dtype}, {N, b.k * b.i});
    check_cuda_arg(op, "dw", dw, {DType::f32}, {b.k, b.o, b.i});
  }
  if (N == 0) return;
  if (is_given(dx)) {
    LINGUA_PROFILE_SCOPE("dx");
    Gemm g;
    g.m = b.i, g.n = N, g.k = b.o;
    g.ab = w.dtype, g.c = dx.dtype;
    g.A = w.data, g.lda = b.i, g.stride_a = b.o * b.i;
    g.B = dy.data, g.ldb = b.k * b.o, g.stride_b = b.o;
    g.C = g.D = dx.data, g.ldc = b.k * b.i, g.stride_c = b.i;
    g.batch = b.k;
    gemm_cuda(g, accumulate_dx ? 1.0f : 0.0f);
  }
  if (is_given(dw)) {
    LINGUA_PROFILE_SCOPE("dw");
    Gemm g;
    g.tb = true;
    g.m = b.i, g.n = b.o, g.k = N;
    g.ab = w.dtype, g.c = DType::f32;
    g.A = x.data, g.lda = b.k * b.i, g.stride_a = b.i;
    g.B = dy.data, g.ldb = b.k * b.o, g.stride_b = b.o;
    g.C = g.D = dw.data, g.ldc = b.i, g.stride_c = b.o * b.i;
    g.batch = b.k;
    gemm_cuda(g, 1.0f);
  }
}

}  // namespace lingua
