// Block-diagonal linear layer on the CPU: equals the dense layer with the block-diagonal matrix,
// finite-difference gradients, skipped gradients and errors.
#include <gtest/gtest.h>

#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/linear/linear.h"
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

TEST(BlockDiag, BackwardMatchesFiniteDifferences) {
  for (Case c : {Case{3, 2, 3, 2}, Case{4, 3, 2, 5}}) {
    auto x = random_vector(c.N * c.k * c.i, 4), w = random_vector(c.k * c.o * c.i, 5),
         R = random_vector(c.N * c.k * c.o, 6);
    std::vector<float> y(R.size());
    auto loss = [&] {
      blockdiag_forward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(w.data(), {c.k, c.o, c.i}),
                        Tensor(y.data(), {c.N, c.k * c.o}));
      return dot(y, R);
    };
    auto num_dx = numeric_gradient(x, loss), num_dw = numeric_gradient(w, loss);
    std::vector<float> dx(x.size(), 7.0f), dw(w.size(), 0.0f);
    blockdiag_backward(Tensor(x.data(), {c.N, c.k * c.i}), Tensor(w.data(), {c.k, c.o, c.i}),
                       Tensor(R.data(), {c.N, c.k * c.o}), Tensor(dx.data(), {c.N, c.k * c.i}),
                       Tensor(dw.data(), {c.k, c.o, c.i}));
    EXPECT_TRUE(close(dx, num_dx, 1e-3, "dx"));
    EXPECT_TRUE(close(dw, num_dw, 1e-3, "dw"));
    // accumulate_dx adds; an empty dw is skipped (x is not read).
    std::vector<float> dx2(x.size(), 1.0f);
    blockdiag_backward(Tensor(), Tensor(w.data(), {c.k, c.o, c.i}), Tensor(R.data(), {c.N, c.k * c.o}),
                       Tensor(dx2.data(), {c.N, c.k * c.i}), Tensor(), true);
    for (size_t e = 0; e < dx.size(); ++e) EXPECT_FLOAT_EQ(dx2[e], dx[e] + 1.0f);
  }
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
}

}  // namespace
