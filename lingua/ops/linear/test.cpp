#include <gtest/gtest.h>

#include "lingua/ops/linear/linear.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, in, out;
};

// y[n, o] = sum_i x[n, i] w[o, i], in double.
std::vector<double> naive_linear(const std::vector<float>& x, const std::vector<float>& w, Case c) {
  std::vector<double> y(c.N * c.out);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < c.in; ++i) s += (double)x[n * c.in + i] * w[o * c.in + i];
      y[n * c.out + o] = s;
    }
  return y;
}

TEST(Linear, ForwardMatchesTripleLoop) {
  for (Case c : {Case{1, 1, 1}, Case{3, 5, 7}, Case{33, 31, 17}, Case{31, 129, 67}}) {
    auto x = random_vector(c.N * c.in, 1);
    auto w = random_vector(c.out * c.in, 2);
    std::vector<float> y(c.N * c.out);
    linear_forward(Tensor(x.data(), {c.N, c.in}), Tensor(w.data(), {c.out, c.in}), Tensor(y.data(), {c.N, c.out}));
    EXPECT_TRUE(close(y, naive_linear(x, w, c), 1e-5, "y")) << c.N << "x" << c.in << "->" << c.out;
  }
}

TEST(Linear, ResidualIsAdded) {
  for (Case c : {Case{1, 1, 1}, Case{3, 5, 7}, Case{33, 31, 17}, Case{31, 129, 67}}) {
    auto x = random_vector(c.N * c.in, 21);
    auto w = random_vector(c.out * c.in, 22);
    const auto r = random_vector(c.N * c.out, 23, -4.0f, 4.0f);
    const Tensor X(x.data(), {c.N, c.in}), W(w.data(), {c.out, c.in});
    std::vector<float> plain(c.N * c.out), sum(c.N * c.out, 9.0f);
    linear_forward(X, W, Tensor(plain.data(), {c.N, c.out}));
    auto r_copy = r;
    linear_forward(X, W, Tensor(sum.data(), {c.N, c.out}), Tensor(r_copy.data(), {c.N, c.out}));
    std::vector<float> expected(plain.size());
    for (size_t i = 0; i < plain.size(); ++i) expected[i] = plain[i] + r[i];
    EXPECT_TRUE(close(sum, expected, 1e-6, "y + residual")) << c.N << "x" << c.in << "->" << c.out;
    EXPECT_EQ(r_copy, r) << "residual must be read only";

    // in place: residual is y itself; the same BLAS call, so the same bits
    auto inplace = r;
    const Tensor Y(inplace.data(), {c.N, c.out});
    linear_forward(X, W, Y, Y);
    EXPECT_EQ(inplace, sum) << c.N << "x" << c.in << "->" << c.out;
  }
}

TEST(Linear, ResidualWithEmptySum) {
  // in == 0: y = residual
  const auto r = random_vector(3 * 4, 24);
  std::vector<float> y(12, 9.0f), none;
  linear_forward(Tensor(none.data(), {3, 0}), Tensor(none.data(), {4, 0}), Tensor(y.data(), {3, 4}),
                 Tensor(r.data(), {3, 4}));
  EXPECT_EQ(y, r);
  auto inplace = r;
  linear_forward(Tensor(none.data(), {3, 0}), Tensor(none.data(), {4, 0}), Tensor(inplace.data(), {3, 4}),
                 Tensor(inplace.data(), {3, 4}));
  EXPECT_EQ(inplace, r);
}

TEST(Linear, ResidualAliasing) {
  const int64_t N = 3, in = 5, out = 7;
  auto x = random_vector(N * in, 25);
  auto w = random_vector(out * in, 26);
  const Tensor X(x.data(), {N, in}), W(w.data(), {out, in});
  std::vector<float> buf = random_vector(2 * N * out, 27);
  const auto orig = buf;
  // disjoint halves of one buffer: fine
  linear_forward(X, W, Tensor(buf.data(), {N, out}), Tensor(buf.data() + N * out, {N, out}));
  std::vector<float> plain(N * out);
  linear_forward(X, W, Tensor(plain.data(), {N, out}));
  for (int64_t i = 0; i < N * out; ++i) EXPECT_NEAR(buf[i], plain[i] + orig[N * out + i], 1e-5) << i;
  // partial overlaps, either way round, fail naming the op and the argument
  for (int64_t shift : {int64_t(1), int64_t(-1), N * out - 1}) {
    float* y = buf.data() + (shift < 0 ? 1 : 0);
    float* r = y + shift;
    try {
      linear_forward(X, W, Tensor(y, {N, out}), Tensor(r, {N, out}));
      ADD_FAILURE() << "no error for shift " << shift;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("linear_forward: argument 'residual'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("overlaps"), std::string::npos) << e.what();
    }
  }
  // shape, dtype
  EXPECT_THROW(linear_forward(X, W, Tensor(buf.data(), {N, out}), Tensor(buf.data() + N * out, {out, N})), Error);
  EXPECT_THROW(linear_forward(X, W, Tensor(buf.data(), {N, out}),
                              Tensor(buf.data() + N * out, {N, out}, DType::bf16, Device::cpu)),
               Error);
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  for (Case c : {Case{1, 1, 1}, Case{3, 5, 7}, Case{13, 9, 11}}) {
    auto x = random_vector(c.N * c.in, 3);
    auto w = random_vector(c.out * c.in, 4);
    auto R = random_vector(c.N * c.out, 5);
    std::vector<float> y(c.N * c.out);
    auto loss = [&] {
      linear_forward(Tensor(x.data(), {c.N, c.in}), Tensor(w.data(), {c.out, c.in}), Tensor(y.data(), {c.N, c.out}));
      return dot(y, R);
    };
    auto num_dx = numeric_gradient(x, loss);
    auto num_dw = numeric_gradient(w, loss);
    std::vector<float> dx(c.N * c.in, 9.0f), dw(c.out * c.in, 0.0f);
    linear_backward(Tensor(x.data(), {c.N, c.in}), Tensor(w.data(), {c.out, c.in}), Tensor(R.data(), {c.N, c.out}),
                    Tensor(dx.data(), {c.N, c.in}), Tensor(dw.data(), {c.out, c.in}));
    EXPECT_TRUE(close(dx, num_dx, 1e-3, "dx"));
    EXPECT_TRUE(close(dw, num_dw, 1e-3, "dw"));
  }
}

TEST(Linear, AccumulationAndSkippedGradients) {
  const Case c{33, 31, 17};
  auto x = random_vector(c.N * c.in, 6);
  auto w = random_vector(c.out * c.in, 7);
  auto dy = random_vector(c.N * c.out, 8);
  Tensor X(x.data(), {c.N, c.in}), W(w.data(), {c.out, c.in}), DY(dy.data(), {c.N, c.out});

  std::vector<float> dx(c.N * c.in), dw(c.out * c.in, 0.0f);
  linear_backward(X, W, DY, Tensor(dx.data(), {c.N, c.in}), Tensor(dw.data(), {c.out, c.in}));

  // dw accumulates: a second call doubles it; dx alone leaves dw alone.
  auto dw2 = dw;
  linear_backward(X, W, DY, Tensor(), Tensor(dw2.data(), {c.out, c.in}));
  std::vector<float> twice(dw.size());
  for (size_t i = 0; i < dw.size(); ++i) twice[i] = 2 * dw[i];
  EXPECT_TRUE(close(dw2, twice, 1e-6, "dw twice"));

  // accumulate_dx adds to what is there; without it dx is overwritten.
  auto base = random_vector(c.N * c.in, 9);
  auto dx_acc = base;
  linear_backward(X, W, DY, Tensor(dx_acc.data(), {c.N, c.in}), Tensor(), true);
  std::vector<float> expected(base.size());
  for (size_t i = 0; i < base.size(); ++i) expected[i] = base[i] + dx[i];
  EXPECT_TRUE(close(dx_acc, expected, 1e-6, "dx accumulated"));
  auto dx_over = base;
  linear_backward(X, W, DY, Tensor(dx_over.data(), {c.N, c.in}), Tensor(), false);
  EXPECT_TRUE(close(dx_over, dx, 1e-6, "dx written"));
}

TEST(Linear, Repeatable) {
  const Case c{129, 257, 65};
  auto x = random_vector(c.N * c.in, 12);
  auto w = random_vector(c.out * c.in, 13);
  auto dy = random_vector(c.N * c.out, 14);
  std::vector<float> y1(c.N * c.out), y2(c.N * c.out), dx1(c.N * c.in), dx2(c.N * c.in);
  std::vector<float> dw1(c.out * c.in, 0.0f), dw2(c.out * c.in, 0.0f);
  Tensor X(x.data(), {c.N, c.in}), W(w.data(), {c.out, c.in}), DY(dy.data(), {c.N, c.out});
  linear_forward(X, W, Tensor(y1.data(), {c.N, c.out}));
  linear_forward(X, W, Tensor(y2.data(), {c.N, c.out}));
  linear_backward(X, W, DY, Tensor(dx1.data(), {c.N, c.in}), Tensor(dw1.data(), {c.out, c.in}));
  linear_backward(X, W, DY, Tensor(dx2.data(), {c.N, c.in}), Tensor(dw2.data(), {c.out, c.in}));
  EXPECT_EQ(y1, y2);
  EXPECT_EQ(dx1, dx2);
  EXPECT_EQ(dw1, dw2);
}

TEST(Linear, ShapeErrors) {
  auto x = random_vector(3 * 5, 10);
  auto w = random_vector(7 * 5, 11);
  std::vector<float> y(3 * 7), dx(3 * 5), dw(7 * 5);
  EXPECT_THROW(linear_forward(Tensor(x.data(), {3, 5}), Tensor(w.data(), {5, 7}), Tensor(y.data(), {3, 7})), Error);
  EXPECT_THROW(linear_forward(Tensor(x.data(), {3, 5}), Tensor(w.data(), {7, 5}), Tensor(y.data(), {7, 3})), Error);
  EXPECT_THROW(linear_forward(Tensor(x.data(), {15}), Tensor(w.data(), {7, 5}), Tensor(y.data(), {3, 7})), Error);
  EXPECT_THROW(linear_backward(Tensor(x.data(), {3, 5}), Tensor(w.data(), {7, 5}), Tensor(y.data(), {3, 7}),
                               Tensor(dx.data(), {5, 3}), Tensor(dw.data(), {7, 5})),
               Error);
  EXPECT_THROW(linear_backward(Tensor(x.data(), {3, 5}), Tensor(w.data(), {7, 5}), Tensor(y.data(), {3, 7}),
                               Tensor(dx.data(), {3, 5}), Tensor(dw.data(), {5, 7})),
               Error);
  EXPECT_THROW(linear_forward(Tensor(x.data(), {3, 5}, DType::f32, Device::cuda), Tensor(w.data(), {7, 5}),
                              Tensor(y.data(), {3, 7})),
               Error);
  try {
    linear_forward(Tensor(x.data(), {3, 5}), Tensor(w.data(), {7, 5}), Tensor(y.data(), {7, 3}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear_forward: argument 'y'"), std::string::npos) << e.what();
  }
}

}  // namespace
