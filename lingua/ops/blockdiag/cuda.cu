// Block-diagonal linear layer on the GPU: each product is one batched cuBLASLt GEMM over the k
// blocks (gemms.h: the same GEMMs the CPU path runs), reading and writing the blocks in place.
#include "lingua/core/cuda_utils.cuh"
#include "lingua/core/profiler.h"
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/blockdiag/gemms.h"
#include "lingua/ops/linear/checks.h"
#include "lingua/ops/linear/gemm.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {
void check_w(const char* op, const Tensor& w) {
  check_cuda_arg(op, "w", w, {DType::bf16, DType::f32}, {-1, -1, -1});
  if (w.size(0) < 1 || w.size(1) < 1 || w.size(2) < 1)
    fail(op, ": argument 'w' (", w.str(), ") has no blocks or empty ones");
}
}  // namespace

void blockdiag_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y, BlockLayout x_layout,
                            BlockLayout y_layout) {
  const char* op = "blockdiag_forward";
  check_w(op, w);
  check_cuda_arg(op, "x", x, {w.dtype}, {-1, -1});
  check_cuda_product_out(op, "y", y, x.dtype, {-1, -1});
  const BlockdiagDims d = check_forward_shapes(op, x, w, y, x_layout, y_layout);
  gemm_cuda(blockdiag_forward_gemm(d, x, w, y, x_layout, y_layout), 0.0f);
}

void blockdiag_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                             bool accumulate_dx, BlockLayout x_layout, BlockLayout y_layout) {
  const char* op = "blockdiag_backward";
  check_w(op, w);
  check_cuda_arg(op, "dy", dy, {w.dtype}, {-1, -1});
  if (is_given(dx)) check_cuda_product_out(op, "dx", dx, w.dtype, {-1, -1});
  if (is_given(dw)) {
    check_cuda_arg(op, "x", x, {w.dtype}, {-1, -1});
    check_cuda_arg(op, "dw", dw, {DType::f32}, {w.size(0), w.size(1), w.size(2)});
  }
  const BlockdiagDims d = check_backward_shapes(op, x, w, dy, dx, is_given(dw), x_layout, y_layout);
  if (d.N == 0) return;
  if (is_given(dx)) {
    LINGUA_PROFILE_SCOPE("dx");
    gemm_cuda(blockdiag_dx_gemm(d, w, dy, dx, x_layout, y_layout), accumulate_dx ? 1.0f : 0.0f);
  }
  if (is_given(dw)) {
    LINGUA_PROFILE_SCOPE("dw");
    gemm_cuda(blockdiag_dw_gemm(d, x, dy, dw, x_layout, y_layout), 1.0f);
  }
}

}  // namespace lingua
