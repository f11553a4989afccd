// Each operand of a block product, seen by a column-major GEMM. Block c of an activation is the
// row-major matrix M_c [N, w]; its storage is a column-major matrix with a leading dimension and a
// per-block offset that holds either M_c^T (rows layout) or M_c (feature-major layouts, L wide):
//   rows:        (n, j) at n*(k*w) + c*w + j  -> column-major [w, N], ld k*w, block stride w, M^T
//   features:    (n, j) at (c*w + j)*L + n    -> column-major [N, w], ld L, block stride w*L, M
//   interleaved: (n, j) at (j*k + c)*L + n    -> column-major [N, w], ld k*L, block stride L, M
// W[c] row-major [o, i] is column-major [i, o], ld i, block stride o*i: it holds W_c^T. A GEMM
// that needs M (or M^T) transposes exactly when the storage holds the other one.
#include "lingua/ops/blockdiag/gemms.h"

#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

struct Operand {
  const void* p;
  int64_t ld, stride;
  bool holds_t;  // the column-major storage is M^T
};

Operand activation(const Tensor& t, BlockLayout layout, int64_t k, int64_t w) {
  switch (layout) {
    case BlockLayout::rows:
      return {t.data, k * w, w, true};
    case BlockLayout::features:
      return {t.data, t.size(1), w * t.size(1), false};
    case BlockLayout::interleaved:
      return {t.data, k * t.size(1), t.size(1), false};
  }
  return {};
}

Operand weight(const Tensor& w, const BlockdiagDims& d) { return {w.data, d.i, d.o * d.i, true}; }

// op(X) of the GEMM is M (want_t false) or M^T (want_t true) of operand X.
void set_a(Gemm& g, const Operand& x, bool want_t) {
  g.A = x.p, g.lda = x.ld, g.stride_a = x.stride, g.ta = (x.holds_t != want_t);
}
void set_b(Gemm& g, const Operand& x, bool want_t) {
  g.B = x.p, g.ldb = x.ld, g.stride_b = x.stride, g.tb = (x.holds_t != want_t);
}
void set_d(Gemm& g, const Operand& x) {
  g.C = g.D = const_cast<void*>(x.p), g.ldc = x.ld, g.stride_c = x.stride;
}

// out_c [N, width] = L_c [N, g.k] R_c [g.k, width]: l an activation (L its M), r a weight (R its
// M, or its M^T when r_t). Where out's storage holds its transpose, the GEMM computes
// out^T = R^T L^T instead.
void set_rows_product(Gemm& g, const Operand& out, const Operand& l, const Operand& r, bool r_t, int64_t N,
                      int64_t width) {
  if (out.holds_t) {
    g.m = width, g.n = N;
    set_a(g, r, !r_t), set_b(g, l, true);
  } else {
    g.m = N, g.n = width;
    set_a(g, l, false), set_b(g, r, r_t);
  }
  set_d(g, out);
}

}  // namespace

namespace {

// N: the rows-layout side's row count; else the y side's width. x_side, y_side: a tensor of each
// side (x or dx; y or dy), empty where that side has none.
int64_t blockdiag_rows(const Tensor& x_side, BlockLayout x_layout, const Tensor& y_side, BlockLayout y_layout) {
  if (x_layout == BlockLayout::rows && x_side.ndim == 2) return x_side.size(0);
  if (y_layout == BlockLayout::rows && y_side.ndim == 2) return y_side.size(0);
  return y_side.ndim == 2 ? y_side.size(1) : x_side.ndim == 2 ? x_side.size(1) : 0;
}

// rows [N, k*width]; feature-major [k*width, L] with L >= N (L == N when `exact`).
void check_block_activation(const char* op, const char* name, const Tensor& t, int64_t N, int64_t k, int64_t width,
                            BlockLayout layout, bool exact) {
  if (layout == BlockLayout::rows) return check_shape(op, name, t, {N, k * width});
  check_shape(op, name, t, {k * width, -1});
  if (t.size(1) < N || (exact && t.size(1) != N))
    fail(op, ": argument '", name, "' (", t.str(), ") is feature-major [", k * width, ", L] for ", N, " rows: L ",
         exact ? "must be " : "must be at least ", N, exact ? " (the other side is feature-major too)" : "");
}

bool both_feature_major(BlockLayout x_layout, BlockLayout y_layout) {
  return x_layout != BlockLayout::rows && y_layout != BlockLayout::rows;
}

}  // namespace

BlockdiagDims check_forward_shapes(const char* op, const Tensor& x, const Tensor& w, const Tensor& y,
                                   BlockLayout x_layout, BlockLayout y_layout) {
  const BlockdiagDims d{blockdiag_rows(x, x_layout, y, y_layout), w.size(0), w.size(1), w.size(2)};
  const bool exact = both_feature_major(x_layout, y_layout);
  check_block_activation(op, "x", x, d.N, d.k, d.i, x_layout, exact);
  check_block_activation(op, "y", y, d.N, d.k, d.o, y_layout, exact);
  return d;
}

BlockdiagDims check_backward_shapes(const char* op, const Tensor& x, const Tensor& w, const Tensor& dy,
                                    const Tensor& dx, bool x_read, BlockLayout x_layout, BlockLayout y_layout) {
  const BlockdiagDims d{blockdiag_rows(is_given(dx) ? dx : x, x_layout, dy, y_layout), w.size(0), w.size(1),
                       w.size(2)};
  const bool exact = both_feature_major(x_layout, y_layout);
  check_block_activation(op, "dy", dy, d.N, d.k, d.o, y_layout, exact);
  if (is_given(dx)) check_block_activation(op, "dx", dx, d.N, d.k, d.i, x_layout, exact);
  if (x_read) check_block_activation(op, "x", x, d.N, d.k, d.i, x_layout, exact);
  return d;
}

Gemm blockdiag_forward_gemm(const BlockdiagDims& d, const Tensor& x, const Tensor& w, const Tensor& y,
                            BlockLayout x_layout, BlockLayout y_layout) {
  Gemm g;  // Y_c [N, o] = X_c [N, i] W_c^T
  g.ab = x.dtype, g.c = y.dtype, g.batch = d.k, g.k = d.i;
  set_rows_product(g, activation(y, y_layout, d.k, d.o), activation(x, x_layout, d.k, d.i), weight(w, d), true, d.N,
                   d.o);
  return g;
}

Gemm blockdiag_dx_gemm(const BlockdiagDims& d, const Tensor& w, const Tensor& dy, const Tensor& dx,
                       BlockLayout x_layout, BlockLayout y_layout) {
  Gemm g;  // DX_c [N, i] = DY_c [N, o] W_c
  g.ab = w.dtype, g.c = dx.dtype, g.batch = d.k, g.k = d.o;
  set_rows_product(g, activation(dx, x_layout, d.k, d.i), activation(dy, y_layout, d.k, d.o), weight(w, d), false,
                   d.N, d.i);
  return g;
}

Gemm blockdiag_dw_gemm(const BlockdiagDims& d, const Tensor& x, const Tensor& dy, const Tensor& dw,
                       BlockLayout x_layout, BlockLayout y_layout) {
  const Operand X = activation(x, x_layout, d.k, d.i), DY = activation(dy, y_layout, d.k, d.o);
  Gemm g;  // dW_c^T [i, o] (column-major storage of row-major dW_c) += X_c^T [i, N] DY_c [N, o]
  g.ab = x.dtype, g.c = dw.dtype, g.batch = d.k, g.k = d.N;
  g.m = d.i, g.n = d.o;
  set_a(g, X, true), set_b(g, DY, false);
  g.C = g.D = dw.data, g.ldc = d.i, g.stride_c = d.o * d.i;
  return g;
}

}  // namespace lingua
