// Block-diagonal linear layer on the CPU: equals the dense layer with the block-diagonal matrix,
// every layout equals the rows layout rearranged, finite-difference gradients, skipped gradients
// and errors.
#include <gtest/gtest.h>

#include <limits>

#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/stride_permute/stride_permute.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, k, o, i;
};

// The dense [k*o, k*i] matrix with W's blocks on the diagonal.
std::vector<float> dense_of(const std::vector<float>& w, Case c) {
  std::vector<float> d((size_t)(c.k * c.o * c.k * c.i), 0.0f);
  for (int64_t b = 0; b < c.k; ++b)
    for (int64_t r = 0; r < c.o; ++r)
      for (int64_t q = 0; q < c.i; ++q) d[(b * c.o + r) * c.k * c.i + b * c.i + q] = w[(b * c.o + r) * c.i + q];
  return d;
}

const Case kCases[] = {{1, 1, 1, 1}, {3, 2, 5, 3}, {7, 3, 4, 9}, {33, 4, 17, 6}, {5, 7, 1, 2}};

TEST(BlockDiag, EqualsTheDenseBlockDiagonalLayer) {
  for (Case c : kCases) {
    auto x = random_vector(c.N * c.k * c.i, 1), w = random_vector(c.k * c.o * c.i, 2),
         dy = random_vector(c.N * c.k * c.o, 3);
    std::vector<float> d = dense_of(w, c), y(c.N * c.k * c.o), yd(y.size());
    blockdiag_forward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(w.data(), {c.k, c.o, c.i}),
                      Tensor(y.data(), {c.N, c.k * c.o}));
    linear_forward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(d.data(), {c.k * c.o, c.k * c.i}),
                   Tensor(yd.data(), {c.N, c.k * c.o}));
    EXPECT_LT(max_rel_error(y, yd), 1e-5) << c.N << " " << c.k;
    // Backward: dx equals the dense one; dw equals the dense dW's diagonal blocks (added to a start value).
    std::vector<float> dx(x.size()), dxd(x.size()), dw(w.size(), 0.5f), dwd(d.size(), 0.0f);
    blockdiag_backward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(w.data(), {c.k, c.o, c.i}),
                       Tensor(dy.data(), {c.N, c.k * c.o}), Tensor(dx.data(), {c.N, c.k * c.i}),
                       Tensor(dw.data(), {c.k, c.o, c.i}));
    linear_backward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(d.data(), {c.k * c.o, c.k * c.i}),
                    Tensor(dy.data(), {c.N, c.k * c.o}), Tensor(dxd.data(), {c.N, c.k * c.i}),
                    Tensor(dwd.data(), {c.k * c.o, c.k * c.i}));
    EXPECT_LT(max_rel_error(dx, dxd), 1e-5);
    std::vector<float> added(w.size()), diagonal(w.size());  // dw's increment; dwd's diagonal blocks
    for (int64_t b = 0; b < c.k; ++b)
      for (int64_t r = 0; r < c.o; ++r)
        for (int64_t q = 0; q < c.i; ++q) {
          const int64_t e = (b * c.o + r) * c.i + q;
          added[e] = dw[e] - 0.5f;
          diagonal[e] = dwd[(b * c.o + r) * c.k * c.i + b * c.i + q];
        }
    EXPECT_LT(max_rel_error(added, diagonal), 1e-5);
  }
}

constexpr BlockLayout kLayouts[] = {BlockLayout::rows, BlockLayout::features, BlockLayout::interleaved};

// An activation [N, k*w] (rows layout) stored in `layout`, written plainly from the definitions;
// feature-major L wide (0: N), the columns N .. L holding `pad`.
std::vector<float> to_layout(const std::vector<float>& rows, int64_t N, int64_t k, int64_t w, BlockLayout layout,
                             int64_t L = 0, float pad = 0.0f) {
  if (layout == BlockLayout::rows || L == 0) L = N;
  std::vector<float> out((size_t)(L * k * w), pad);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < w; ++j) {
        const float v = rows[n * k * w + c * w + j];
        if (layout == BlockLayout::rows) out[n * k * w + c * w + j] = v;
        if (layout == BlockLayout::features) out[(c * w + j) * L + n] = v;
        if (layout == BlockLayout::interleaved) out[(j * k + c) * L + n] = v;
      }
  return out;
}
// The tensor over v's data: k blocks of w for N rows in `layout` (feature-major: L wide, 0: N).
Tensor act(std::vector<float>& v, int64_t N, int64_t k, int64_t w, BlockLayout layout, int64_t L = 0) {
  return layout == BlockLayout::rows ? Tensor(v.data(), {N, k * w}) : Tensor(v.data(), {k * w, L ? L : N});
}

TEST(BlockDiag, EveryLayoutIsTheRowsLayoutRearranged) {
  // Feature-major tensors beside a rows one are 3 columns wider than N: their inputs' extra
  // columns hold NaN (never read), their outputs' 9 (never written).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (Case c : kCases)
    for (BlockLayout xl : kLayouts)
      for (BlockLayout yl : kLayouts) {
        const int64_t L = (xl == BlockLayout::rows || yl == BlockLayout::rows) ? c.N + 3 : c.N;
        auto x = random_vector(c.N * c.k * c.i, 11), w = random_vector(c.k * c.o * c.i, 12),
             dy = random_vector(c.N * c.k * c.o, 13), dx0 = random_vector(x.size(), 14);
        // The rows layout (checked against the dense layer above).
        std::vector<float> y(dy.size()), dx = dx0, dw(w.size(), 0.25f);
        blockdiag_forward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(w.data(), {c.k, c.o, c.i}),
                          Tensor(y.data(), {c.N, c.k * c.o}));
        blockdiag_backward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(w.data(), {c.k, c.o, c.i}),
                           Tensor(dy.data(), {c.N, c.k * c.o}), Tensor(dx.data(), {c.N, c.k * c.i}),
                           Tensor(dw.data(), {c.k, c.o, c.i}), true);
        // The same in layouts (xl, yl): dx added to the start value in its layout.
        std::vector<float> xl_x = to_layout(x, c.N, c.k, c.i, xl, L, nan),
                           yl_dy = to_layout(dy, c.N, c.k, c.o, yl, L, nan),
                           ly = to_layout(std::vector<float>(y.size(), 5.0f), c.N, c.k, c.o, yl, L, 9.0f),
                           ldx = to_layout(dx0, c.N, c.k, c.i, xl, L, 9.0f), ldw(w.size(), 0.25f);
        blockdiag_forward(act(xl_x, c.N, c.k, c.i, xl, L), Tensor(w.data(), {c.k, c.o, c.i}),
                          act(ly, c.N, c.k, c.o, yl, L), xl, yl);
        blockdiag_backward(act(xl_x, c.N, c.k, c.i, xl, L), Tensor(w.data(), {c.k, c.o, c.i}),
                           act(yl_dy, c.N, c.k, c.o, yl, L), act(ldx, c.N, c.k, c.i, xl, L),
                           Tensor(ldw.data(), {c.k, c.o, c.i}), true, xl, yl);
        const std::string what = "N " + std::to_string(c.N) + " k " + std::to_string(c.k) + " layouts " +
                                 std::to_string((int)xl) + " " + std::to_string((int)yl);
        // (close() also fails on a NaN, which a read of an extra column would spread.)
        EXPECT_TRUE(close(ly, to_layout(y, c.N, c.k, c.o, yl, L, 9.0f), 1e-5, "y")) << what;
        EXPECT_TRUE(close(ldx, to_layout(dx, c.N, c.k, c.i, xl, L, 9.0f), 1e-5, "dx")) << what;
        EXPECT_TRUE(close(ldw, dw, 1e-5, "dw")) << what;
      }
}

TEST(BlockDiag, BackwardMatchesFiniteDifferences) {
  // Every pair of layouts; the data is random in whatever layout it is stored.
  for (Case c : {Case{3, 2, 3, 2}, Case{4, 3, 2, 5}})
    for (BlockLayout xl : kLayouts)
      for (BlockLayout yl : kLayouts) {
        auto x = random_vector(c.N * c.k * c.i, 4), w = random_vector(c.k * c.o * c.i, 5),
             R = random_vector(c.N * c.k * c.o, 6);
        std::vector<float> y(R.size());
        auto loss = [&] {
          blockdiag_forward(act(x, c.N, c.k, c.i, xl), Tensor(w.data(), {c.k, c.o, c.i}), act(y, c.N, c.k, c.o, yl), xl,
                            yl);
          return dot(y, R);
        };
        auto num_dx = numeric_gradient(x, loss), num_dw = numeric_gradient(w, loss);
        std::vector<float> dx(x.size(), 7.0f), dw(w.size(), 0.0f);
        blockdiag_backward(act(x, c.N, c.k, c.i, xl), Tensor(w.data(), {c.k, c.o, c.i}), act(R, c.N, c.k, c.o, yl),
                           act(dx, c.N, c.k, c.i, xl), Tensor(dw.data(), {c.k, c.o, c.i}), false, xl, yl);
        EXPECT_TRUE(close(dx, num_dx, 1e-3, "dx"));
        EXPECT_TRUE(close(dw, num_dw, 1e-3, "dw"));
        // accumulate_dx adds; an empty dw is skipped (x is not read).
        std::vector<float> dx2(x.size(), 1.0f);
        blockdiag_backward(Tensor(), Tensor(w.data(), {c.k, c.o, c.i}), act(R, c.N, c.k, c.o, yl),
                           act(dx2, c.N, c.k, c.i, xl), Tensor(), true, xl, yl);
        for (size_t e = 0; e < dx.size(); ++e) EXPECT_FLOAT_EQ(dx2[e], dx[e] + 1.0f);
      }
}

TEST(BlockDiag, FeatureMajorOutputReadInterleavedIsTheStridePermutation) {
  // BlockShuffle's middle: a features output of k blocks of q, read as interleaved, is
  // stride_permute(z, k) of the rows-layout z: u[n, c*q + a] = z[n, a*k + c].
  const int64_t N = 5, k = 3, q = 4, i = 2;
  auto x = random_vector(N * k * i, 21), w = random_vector(k * q * i, 22);
  std::vector<float> z(N * k * q), zt(z.size());
  blockdiag_forward(Tensor(x.data(), {N, k * i}), Tensor(w.data(), {k, q, i}), Tensor(z.data(), {N, k * q}));
  blockdiag_forward(Tensor(x.data(), {N, k * i}), Tensor(w.data(), {k, q, i}), Tensor(zt.data(), {k * q, N}),
                    BlockLayout::rows, BlockLayout::features);
  std::vector<float> u(z.size());
  stride_permute(Tensor(z.data(), {N, k * q}), k, Tensor(u.data(), {N, k * q}));
  EXPECT_EQ(to_layout(u, N, k, q, BlockLayout::interleaved), zt);
}

TEST(BlockDiag, ShapeErrorsNameTheArgument) {
  std::vector<float> x(12), w(12), y(12);
  EXPECT_THROW(
      {
        try {
          blockdiag_forward(Tensor(x.data(), {2, 4}), Tensor(w.data(), {2, 3, 2}), Tensor(y.data(), {2, 5}));
        } catch (const std::exception& e) {
          EXPECT_NE(std::string(e.what()).find("'y'"), std::string::npos) << e.what();
          throw;
        }
      },
      std::exception);
  EXPECT_THROW(blockdiag_forward(Tensor(x.data(), {2, 5}), Tensor(w.data(), {2, 3, 2}), Tensor(y.data(), {2, 6})),
               std::exception);  // x is not [N, k * i]
  EXPECT_THROW(blockdiag_forward(Tensor(x.data(), {2, 4}), Tensor(w.data(), {2, 3, 2}), Tensor(y.data(), {6, 2}),
                                 BlockLayout::features, BlockLayout::features),
               std::exception);  // a features x is [k * i, N]
  // Beside a rows y of 2 rows, a feature-major x may be wider (3) but not narrower (1); beside a
  // feature-major y it must be as wide.
  EXPECT_NO_THROW(blockdiag_forward(Tensor(x.data(), {4, 3}), Tensor(w.data(), {2, 3, 2}), Tensor(y.data(), {2, 6}),
                                    BlockLayout::features, BlockLayout::rows));
  EXPECT_THROW(blockdiag_forward(Tensor(x.data(), {4, 1}), Tensor(w.data(), {2, 3, 2}), Tensor(y.data(), {2, 6}),
                                 BlockLayout::features, BlockLayout::rows),
               std::exception);
  EXPECT_THROW(blockdiag_forward(Tensor(x.data(), {4, 3}), Tensor(w.data(), {2, 3, 2}), Tensor(y.data(), {6, 2}),
                                 BlockLayout::features, BlockLayout::interleaved),
               std::exception);
}

}  // namespace
