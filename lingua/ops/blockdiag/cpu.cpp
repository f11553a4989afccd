#include <cblas.h>

#include <algorithm>

#include "lingua/core/profiler.h"
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {
struct Blocks {
  int64_t N, k, o, i;
};
// w's blocks and the row count of `rows` ([N, k * width]).
Blocks check_blocks(const char* op, const Tensor& w, const char* rows_name, const Tensor& rows, bool out_width) {
  check_f32(op, "w", w, {-1, -1, -1});
  const int64_t k = w.size(0), o = w.size(1), i = w.size(2);
  if (k < 1) fail(op, ": argument 'w' (", w.str(), ") has no blocks");
  check_f32(op, rows_name, rows, {-1, k * (out_width ? o : i)});
  return {rows.size(0), k, o, i};
}
}  // namespace

void blockdiag_forward(const Tensor& x, const Tensor& w, const Tensor& y) {
  LINGUA_PROFILE_SCOPE("blockdiag_forward");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return blockdiag_forward_cuda(x, w, y);
#endif
  const char* op = "blockdiag_forward";
  const Blocks b = check_blocks(op, w, "x", x, false);
  check_f32(op, "y", y, {b.N, b.k * b.o});
  if (b.N == 0 || b.o == 0) return;
  if (b.i == 0) {
    std::fill_n(y.f32(), b.N * b.k * b.o, 0.0f);
    return;
  }
  for (int64_t c = 0; c < b.k; ++c)  // y_c[N, o] = x_c[N, i] W_c^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b.N, (int)b.o, (int)b.i, 1.0f, x.f32() + c * b.i,
                (int)(b.k * b.i), w.f32() + c * b.o * b.i, (int)b.i, 0.0f, y.f32() + c * b.o, (int)(b.k * b.o));
}

void blockdiag_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                        bool accumulate_dx) {
  LINGUA_PROFILE_SCOPE("blockdiag_backward");
#ifdef LINGUA_CUDA
  if (dy.device == Device::cuda) return blockdiag_backward_cuda(x, w, dy, dx, dw, accumulate_dx);
#endif
  const char* op = "blockdiag_backward";
  const Blocks b = check_blocks(op, w, "dy", dy, true);
  if (is_given(dx)) check_f32(op, "dx", dx, {b.N, b.k * b.i});
  if (is_given(dw)) {
    check_f32(op, "x", x, {b.N, b.k * b.i});
    check_f32(op, "dw", dw, {b.k, b.o, b.i});
  }
  if (b.N == 0 || b.i == 0) return;
  const int ldx = (int)(b.k * b.i), ldy = (int)(b.k * b.o);
  for (int64_t c = 0; c < b.k; ++c) {
    const float* wc = w.f32() + c * b.o * b.i;
    if (is_given(dx)) {
      float* dxc = dx.f32() + c * b.i;
      if (b.o == 0) {
        if (!accumulate_dx)
          for (int64_t n = 0; n < b.N; ++n) std::fill_n(dxc + n * ldx, b.i, 0.0f);
      } else {  // dx_c[N, i] (+)= dy_c[N, o] W_c[o, i]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b.N, (int)b.i, (int)b.o, 1.0f,
                    dy.f32() + c * b.o, ldy, wc, (int)b.i, accumulate_dx ? 1.0f : 0.0f, dxc, ldx);
      }
    }
    if (is_given(dw) && b.o > 0)  // dW_c[o, i] += dy_c[N, o]^T x_c[N, i]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)b.o, (int)b.i, (int)b.N, 1.0f, dy.f32() + c * b.o,
                  ldy, x.f32() + c * b.i, ldx, 1.0f, dw.f32() + c * b.o * b.i, (int)b.i);
  }
}

}  // namespace lingua
