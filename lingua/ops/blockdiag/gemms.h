#pragma once
// The strided batched GEMMs (column-major, ops/linear/gemm.h) of the block-diagonal layer, one
// per product, for both backends: the CPU path runs them with gemm_host, the CUDA path with
// gemm_cuda, so the layout arithmetic the GPU relies on is what the CPU tests check. Internal to
// lingua/ops/blockdiag. Dtypes: the operands' (ab) and the output's (c) from the tensors given.
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/linear/gemm.h"

namespace lingua {

struct BlockdiagDims {
  int64_t N, k, o, i;  // rows; blocks; a block's output and input widths
};

// The shapes of a forward (x, y) or a backward (x, dy, dx; dx or x may be empty, dw checked by
// the caller), after the backend's dtype checks: N from the layouts (blockdiag.h), each
// activation's shape checked, failing with the op and the argument named.
BlockdiagDims check_forward_shapes(const char* op, const Tensor& x, const Tensor& w, const Tensor& y,
                                   BlockLayout x_layout, BlockLayout y_layout);
BlockdiagDims check_backward_shapes(const char* op, const Tensor& x, const Tensor& w, const Tensor& dy,
                                    const Tensor& dx, bool x_read, BlockLayout x_layout, BlockLayout y_layout);

// y = x blockdiag(W)^T (beta 0).
Gemm blockdiag_forward_gemm(const BlockdiagDims& d, const Tensor& x, const Tensor& w, const Tensor& y,
                            BlockLayout x_layout, BlockLayout y_layout);
// dx = dy blockdiag(W) (beta 0, or 1 to add).
Gemm blockdiag_dx_gemm(const BlockdiagDims& d, const Tensor& w, const Tensor& dy, const Tensor& dx,
                       BlockLayout x_layout, BlockLayout y_layout);
// dW[c] += dy_c^T x_c (beta 1).
Gemm blockdiag_dw_gemm(const BlockdiagDims& d, const Tensor& x, const Tensor& dy, const Tensor& dw,
                       BlockLayout x_layout, BlockLayout y_layout);

}  // namespace lingua
