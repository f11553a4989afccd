#pragma once
// Block-diagonal linear layer (the structured FFNs' BlockDense and BlockShuffle, SPEC §3): k
// independent products on the k blocks of each row's features,
//   forward:  y_c[N, o] = x_c[N, i] W[c]^T       for c in [0, k)
//   backward: dx_c = dy_c W[c]                    (written, or added)
//             dW[c] += dy_c^T x_c                 (always accumulated)
// i.e. y = x blockdiag(W[0], ..., W[k-1])^T with W [k, o, i], where x_c is block c of x. Where the
// blocks live is the activation's BlockLayout (x and dx share one, y and dy another):
//   rows:        [N, k*w], block c = columns c*w .. (c+1)*w (the usual row-major activation)
//   features:    [k*w, L], the transpose of rows (feature-major) in columns 0 .. N
//   interleaved: [w*k, L], feature-major with the blocks interleaved: element j of block c is row
//                j*k + c. A features output read as interleaved is the stride permutation
//                stride_permute(., k) in between for free (BlockShuffle's P_mid).
// N is the row count of the side in the rows layout (x's or y's); a feature-major tensor may then
// be wider than N (L > N, e.g. feature_major_width(N): GEMMs run fastest on 16-byte aligned
// columns); its columns N .. L are neither read nor written. Where both sides are feature-major,
// both have L = N.
// No copies: every layout is a strided view, one batched GEMM per product. dx or dw may be an
// empty Tensor to skip it; x is read only for dw. y / dx never alias the inputs.
#include <cstdint>

#include "lingua/core/tensor.h"

namespace lingua {

enum class BlockLayout : uint8_t { rows, features, interleaved };

// A feature-major tensor's width L for N rows: N rounded up to a multiple of 8 elements.
inline int64_t feature_major_width(int64_t N) { return (N + 7) / 8 * 8; }

void blockdiag_forward(const Tensor& x,  // [N, k*i] f32 (rows; else [k*i, L])
                       const Tensor& w,  // [k, o, i] f32
                       const Tensor& y,  // [N, k*o] f32 (rows; else [k*o, L]), written
                       BlockLayout x_layout = BlockLayout::rows, BlockLayout y_layout = BlockLayout::rows);
void blockdiag_backward(const Tensor& x,   // x_layout as forward's (read only for dw)
                        const Tensor& w,   // [k, o, i] f32
                        const Tensor& dy,  // y_layout
                        const Tensor& dx,  // x_layout, written (or added), may be empty
                        const Tensor& dw,  // [k, o, i] f32, accumulated, may be empty
                        bool accumulate_dx = false, BlockLayout x_layout = BlockLayout::rows,
                        BlockLayout y_layout = BlockLayout::rows);

// ---- CUDA implementation (cuda.cu): the linear op's GEMM (ops/linear/gemm.h), batched over the
// k blocks, with the strided batched GEMMs of gemms.h (the CPU path runs the same ones). dtypes
// as linear's: x, w, dy both bf16 or both f32; y / dx bf16 or f32 (f32 only from f32 inputs); dw
// f32.
void blockdiag_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& y, BlockLayout x_layout,
                            BlockLayout y_layout);
void blockdiag_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx, const Tensor& dw,
                             bool accumulate_dx, BlockLayout x_layout, BlockLayout y_layout);

}  // namespace lingua
