// Block-diagonal layer on the CPU: the GEMMs of gemms.h, run by OpenBLAS.
#include "lingua/core/profiler.h"
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/blockdiag/gemms.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {
// w's blocks and the row count of `act` (k blocks of `width` in `layout`), checked.
BlockdiagDims check_blocks(const char* op, const Tensor& w, const char* act_name, const Tensor& act,
                           BlockLayout layout, bool out_width) {
  check_f32(op, "w", w, {-1, -1, -1});
  const int64_t k = w.size(0), o = w.size(1), i = w.size(2);
  if (k < 1) fail(op, ": argument 'w' (", w.str(), ") has no blocks");
  const int64_t width = k * (out_width ? o : i);
  if (layout == BlockLayout::rows)
    check_f32(op, act_name, act, {-1, width});
  else
    check_f32(op, act_name, act, {width, -1});
  return {blockdiag_rows(act, layout), k, o, i};
}
void check_activation(const char* op, const char* name, const Tensor& t, const BlockdiagDims& d, int64_t width,
                      BlockLayout layout) {
  const Dims2 s = blockdiag_shape(d.N, d.k, width, layout);
  check_f32(op, name, t, {s.d0, s.d1});
}
}  // namespace

void blockdiag_forward(const Tensor& x, const Tensor& w, const Tensor& y, BlockLayout x_layout, BlockLayout y_layout) {
  LINGUA_PROFILE_SCOPE("blockdiag_forward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return blockdiag_forward_cuda(x, w, y, x_layout, y_layout);
#endif
  const char* op = "blockdiag_forward";
  const BlockdiagDims d = check_blocks(op, w, "x", x, x_layout, false);
  check_activation(op, "y", y, d, d.o, y_layout);
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
  const BlockdiagDims d = check_blocks(op, w, "dy", dy, y_layout, true);
  if (is_given(dx)) check_activation(op, "dx", dx, d, d.i, x_layout);
  if (is_given(dw)) {
    check_activation(op, "x", x, d, d.i, x_layout);
    check_f32(op, "dw", dw, {d.k, d.o, d.i});
  }
  if (is_given(dx)) gemm_host(blockdiag_dx_gemm(d, w, dy, dx, x_layout, y_layout), accumulate_dx ? 1.0f : 0.0f);
  if (is_given(dw)) gemm_host(blockdiag_dw_gemm(d, x, dy, dw, x_layout, y_layout), 1.0f);
}

}  // namespace lingua
