// Block-diagonal layer on the CPU: the GEMMs of gemms.h, run by OpenBLAS.
#include "lingua/core/profiler.h"
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/blockdiag/gemms.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {
// w [k, o, i], f32 (k >= 1).
void check_w(const char* op, const Tensor& w) {
  check_f32(op, "w", w, {-1, -1, -1});
  if (w.size(0) < 1) fail(op, ": argument 'w' (", w.str(), ") has no blocks");
}
}  // namespace

void blockdiag_forward(const Tensor& x, const Tensor& w, const Tensor& y, BlockLayout x_layout, BlockLayout y_layout) {
  LINGUA_PROFILE_SCOPE("blockdiag_forward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return blockdiag_forward_cuda(x, w, y, x_layout, y_layout);
#endif
  const char* op = "blockdiag_forward";
  check_w(op, w);
  check_f32(op, "x", x, {-1, -1});
  check_f32(op, "y", y, {-1, -1});
  const BlockdiagDims d = check_forward_shapes(op, x, w, y, x_layout, y_layout);
  gemm_host(blockdiag_forward_gemm(d, x, w, y, x_layout, y_layout), 0.0f);
}

void blockdiag_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                        bool accumulate_dx, BlockLayout x_layout, BlockLayout y_layout) {
  LINGUA_PROFILE_SCOPE("blockdiag_backward");
#ifdef LINGUA_CUDA
  if (dy.device == Device::cuda)
    return blockdiag_backward_cuda(x, w, dy, dx, dw, accumulate_dx, x_layout, y_layout);
#endif
  const char* op = "blockdiag_backward";
  check_w(op, w);
  check_f32(op, "dy", dy, {-1, -1});
  if (is_given(dx)) check_f32(op, "dx", dx, {-1, -1});
  if (is_given(dw)) {
    check_f32(op, "x", x, {-1, -1});
    check_f32(op, "dw", dw, {w.size(0), w.size(1), w.size(2)});
  }
  const BlockdiagDims d = check_backward_shapes(op, x, w, dy, dx, is_given(dw), x_layout, y_layout);
  if (is_given(dx)) gemm_host(blockdiag_dx_gemm(d, w, dy, dx, x_layout, y_layout), accumulate_dx ? 1.0f : 0.0f);
  if (is_given(dw)) gemm_host(blockdiag_dw_gemm(d, x, dy, dw, x_layout, y_layout), 1.0f);
}

}  // namespace lingua
