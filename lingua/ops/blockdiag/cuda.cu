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
BlockdiagDims check_w(const char* op, const Tensor& w, const char* act_name, const Tensor& act, BlockLayout layout,
                      bool out_width) {
  check_cuda_arg(op, "w", w, {DType::bf16, DType::f32}, {-1, -1, -1});
  const int64_t k = w.size(0), o = w.size(1), i = w.size(2);
  if (k < 1 || i < 1 || o < 1) fail(op, ": argument 'w' (", w.str(), ") has no blocks or empty ones");
  const int64_t width = k * (out_width ? o : i);
  if (layout == BlockLayout::rows)
    check_cuda_arg(op, act_name, act, {w.dtype}, {-1, width});
  else
    check_cuda_arg(op, act_name, act, {w.dtype}, {width, -1});
  return {blockdiag_rows(act, layout), k, o, i};
}
}  // namespace

void blockdiag_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y, BlockLayout x_layout,
                            BlockLayout y_layout) {
  const char* op = "blockdiag_forward";
  const BlockdiagDims d = check_w(op, w, "x", x, x_layout, false);
  const Dims2 s = blockdiag_shape(d.N, d.k, d.o, y_layout);
  check_cuda_product_out(op, "y", y, x.dtype, {s.d0, s.d1});
  gemm_cuda(blockdiag_forward_gemm(d, x, w, y, x_layout, y_layout), 0.0f);
}

void blockdiag_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                             bool accumulate_dx, BlockLayout x_layout, BlockLayout y_layout) {
  const char* op = "blockdiag_backward";
  const BlockdiagDims d = check_w(op, w, "dy", dy, y_layout, true);
  const Dims2 s = blockdiag_shape(d.N, d.k, d.i, x_layout);
  if (is_given(dx)) check_cuda_product_out(op, "dx", dx, w.dtype, {s.d0, s.d1});
  if (is_given(dw)) {
    check_cuda_arg(op, "x", x, {w.dtype}, {s.d0, s.d1});
    check_cuda_arg(op, "dw", dw, {DType::f32}, {d.k, d.o, d.i});
  }
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
