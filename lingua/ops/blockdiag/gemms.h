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

// N of a product (blockdiag.h): the rows-layout side's row count; else the y side's width. x_side
// and y_side are a tensor of each side (x or dx; y or dy; an empty one where that side has none).
int64_t blockdiag_rows(const Tensor& x_side, BlockLayout x_layout, const Tensor& y_side, BlockLayout y_layout);
// What an activation of k blocks of `width` must be: rows [N, k*width]; feature-major [k*width, L]
// with L >= N (L == N when `exact`). Fails naming the op and the argument.
void check_block_activation(const char* op, const char* name, const Tensor& t, int64_t N, int64_t k, int64_t width,
                            BlockLayout layout, bool exact);

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
