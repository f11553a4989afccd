#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "lingua/ops/rmsnorm/rmsnorm.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

constexpr float kEps = 1e-5f;

struct Case {
  int64_t N, D;
};

TEST(RMSNorm, ForwardMatchesDoubleReference) {
  for (Case c : {Case{1, 1}, Case{3, 7}, Case{33, 31}, Case{31, 33}, Case{97, 515}}) {
    auto x = random_vector(c.N * c.D, 1, -2.0f, 2.0f);
    auto w = random_vector(c.D, 2, 0.5f, 1.5f);
    std::vector<float> y(c.N * c.D), rstd(c.N);
    rmsnorm_forward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), kEps, Tensor(y.data(), {c.N, c.D}),
                    Tensor(rstd.data(), {c.N}));
    std::vector<double> y_ref(c.N * c.D), r_ref(c.N);
    for (int64_t n = 0; n < c.N; ++n) {
      double ss = 0;
      for (int64_t j = 0; j < c.D; ++j) ss += (double)x[n * c.D + j] * x[n * c.D + j];
      r_ref[n] = 1.0 / std::sqrt(ss / c.D + kEps);
      for (int64_t j = 0; j < c.D; ++j) y_ref[n * c.D + j] = x[n * c.D + j] * r_ref[n] * w[j];
    }
    EXPECT_TRUE(close(y, y_ref, 1e-6, "y")) << c.N << "x" << c.D;
    EXPECT_TRUE(close(rstd, r_ref, 1e-6, "rstd")) << c.N << "x" << c.D;
  }
}

TEST(RMSNorm, BackwardMatchesFiniteDifferences) {
  for (Case c : {Case{1, 3}, Case{3, 7}, Case{5, 31}}) {  // D = 1 has a ~0 gradient: FD noise only
    auto x = random_vector(c.N * c.D, 3, -2.0f, 2.0f);
    auto w = random_vector(c.D, 4, 0.5f, 1.5f);
    auto R = random_vector(c.N * c.D, 5);
    std::vector<float> y(c.N * c.D), rstd(c.N);
    auto loss = [&] {
      rmsnorm_forward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), kEps, Tensor(y.data(), {c.N, c.D}),
                      Tensor(rstd.data(), {c.N}));
      return dot(y, R);
    };
    auto num_dx = numeric_gradient(x, loss);
    auto num_dw = numeric_gradient(w, loss);
    loss();  // rstd for the unperturbed x
    std::vector<float> dx(c.N * c.D, 3.0f), dw(c.D, 0.0f);
    rmsnorm_backward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), Tensor(rstd.data(), {c.N}),
                     Tensor(R.data(), {c.N, c.D}), Tensor(dx.data(), {c.N, c.D}), Tensor(dw.data(), {c.D}));
    EXPECT_TRUE(close(dx, num_dx, 2e-3, "dx")) << c.N << "x" << c.D;
    EXPECT_TRUE(close(dw, num_dw, 2e-3, "dw")) << c.N << "x" << c.D;
  }
}

struct Backward {
  std::vector<float> dx, dw;
};

Backward run_backward(Case c, int threads, bool accumulate_dx, int calls) {
  auto x = random_vector(c.N * c.D, 6, -2.0f, 2.0f);
  auto w = random_vector(c.D, 7, 0.5f, 1.5f);
  auto dy = random_vector(c.N * c.D, 8);
  std::vector<float> y(c.N * c.D), rstd(c.N);
  rmsnorm_forward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), kEps, Tensor(y.data(), {c.N, c.D}),
                  Tensor(rstd.data(), {c.N}));
  Backward g{random_vector(c.N * c.D, 9), std::vector<float>(c.D, 0.0f)};
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  for (int i = 0; i < calls; ++i)
    rmsnorm_backward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), Tensor(rstd.data(), {c.N}),
                     Tensor(dy.data(), {c.N, c.D}), Tensor(g.dx.data(), {c.N, c.D}), Tensor(g.dw.data(), {c.D}),
                     accumulate_dx);
  omp_set_num_threads(saved);
  return g;
}

TEST(RMSNorm, AccumulationRules) {
  const Case c{33, 31};
  auto once = run_backward(c, 2, false, 1);
  auto twice = run_backward(c, 2, false, 2);
  std::vector<float> dw2(c.D);
  for (int64_t j = 0; j < c.D; ++j) dw2[j] = 2 * once.dw[j];
  EXPECT_TRUE(close(twice.dw, dw2, 1e-6, "dw accumulates"));
  EXPECT_TRUE(close(twice.dx, once.dx, 0.0, "dx is written"));
  auto added = run_backward(c, 2, true, 1);
  auto base = random_vector(c.N * c.D, 9);  // the initial dx of run_backward
  std::vector<float> expected(base.size());
  for (size_t i = 0; i < base.size(); ++i) expected[i] = base[i] + once.dx[i];
  EXPECT_TRUE(close(added.dx, expected, 1e-6, "dx accumulated"));
}

TEST(RMSNorm, BackwardIsIndependentOfThreadCount) {
  const Case c{257, 301};  // large enough for the parallel path
  auto one = run_backward(c, 1, false, 1);
  auto three = run_backward(c, 3, false, 1);
  EXPECT_EQ(one.dx, three.dx);
  EXPECT_EQ(one.dw, three.dw);
}

// dx_copy receives the final dx (after the accumulation); dx and dw are as without it.
TEST(RMSNorm, DxCopyEqualsDx) {
  const Case c{257, 301};  // large enough for the parallel path
  auto x = random_vector(c.N * c.D, 20, -2.0f, 2.0f);
  auto w = random_vector(c.D, 21, 0.5f, 1.5f);
  auto dy = random_vector(c.N * c.D, 22);
  std::vector<float> y(c.N * c.D), rstd(c.N);
  rmsnorm_forward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), kEps, Tensor(y.data(), {c.N, c.D}),
                  Tensor(rstd.data(), {c.N}));
  for (bool acc : {false, true}) {
    std::vector<float> dx = random_vector(c.N * c.D, 23), dw(c.D, 0.5f);
    std::vector<float> dx_ref = dx, dw_ref = dw, copy(c.N * c.D, NAN);
    rmsnorm_backward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), Tensor(rstd.data(), {c.N}),
                     Tensor(dy.data(), {c.N, c.D}), Tensor(dx_ref.data(), {c.N, c.D}), Tensor(dw_ref.data(), {c.D}),
                     acc);
    rmsnorm_backward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), Tensor(rstd.data(), {c.N}),
                     Tensor(dy.data(), {c.N, c.D}), Tensor(dx.data(), {c.N, c.D}), Tensor(dw.data(), {c.D}), acc,
                     Tensor(copy.data(), {c.N, c.D}));
    EXPECT_EQ(copy, dx) << "acc " << acc;
    EXPECT_EQ(dx, dx_ref) << "acc " << acc;
    EXPECT_EQ(dw, dw_ref) << "acc " << acc;
  }
  // In place (dx = dy) with a copy.
  std::vector<float> g = dy, dw(c.D, 0.0f), copy(c.N * c.D, NAN), dx_ref(c.N * c.D), dw_ref(c.D, 0.0f);
  rmsnorm_backward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), Tensor(rstd.data(), {c.N}),
                   Tensor(dy.data(), {c.N, c.D}), Tensor(dx_ref.data(), {c.N, c.D}), Tensor(dw_ref.data(), {c.D}));
  rmsnorm_backward(Tensor(x.data(), {c.N, c.D}), Tensor(w.data(), {c.D}), Tensor(rstd.data(), {c.N}),
                   Tensor(g.data(), {c.N, c.D}), Tensor(g.data(), {c.N, c.D}), Tensor(dw.data(), {c.D}), false,
                   Tensor(copy.data(), {c.N, c.D}));
  EXPECT_EQ(g, dx_ref);
  EXPECT_EQ(copy, dx_ref);
  EXPECT_EQ(dw, dw_ref);
}

TEST(RMSNorm, DxCopyErrors) {
  const int64_t N = 3, D = 7;
  auto x = random_vector(N * D, 24);
  auto w = random_vector(D, 25);
  auto r = random_vector(N, 26, 0.5f, 1.5f);
  auto dy = random_vector(N * D, 27);
  std::vector<float> dx(N * D), dw(D), copy(N * D + 1);
  auto run = [&](const Tensor& dx_copy) {
    rmsnorm_backward(Tensor(x.data(), {N, D}), Tensor(w.data(), {D}), Tensor(r.data(), {N}), Tensor(dy.data(), {N, D}),
                     Tensor(dx.data(), {N, D}), Tensor(dw.data(), {D}), false, dx_copy);
  };
  auto message = [&](const Tensor& dx_copy) -> std::string {
    try {
      run(dx_copy);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NO_THROW(run(Tensor(copy.data(), {N, D})));
  EXPECT_NE(message(Tensor(dx.data(), {N, D})).find("rmsnorm_backward: argument 'dx_copy' must not alias dx"),
            std::string::npos);
  EXPECT_NE(message(Tensor(dx.data() + 5, {N, D - 2})).find("argument 'dx_copy'"), std::string::npos);  // shape
  EXPECT_NE(message(Tensor(x.data(), {N, D})).find("must not alias x"), std::string::npos);
  EXPECT_NE(message(Tensor(dy.data() + 4, {N, D}) /* overlaps the end of dy */).find("must not alias dy"),
            std::string::npos);
  EXPECT_THROW(run(Tensor(copy.data(), {N, D}, DType::bf16)), Error);  // the CPU path is fp32 only
}

TEST(RMSNorm, ShapeErrors) {
  auto x = random_vector(3 * 7, 10);
  auto w = random_vector(8, 11);
  std::vector<float> y(3 * 7), rstd(4);
  EXPECT_THROW(rmsnorm_forward(Tensor(x.data(), {3, 7}), Tensor(w.data(), {8}), kEps, Tensor(y.data(), {3, 7}),
                               Tensor(rstd.data(), {3})),
               Error);
  EXPECT_THROW(rmsnorm_forward(Tensor(x.data(), {3, 7}), Tensor(w.data(), {7}), kEps, Tensor(y.data(), {3, 7}),
                               Tensor(rstd.data(), {4})),
               Error);
  EXPECT_THROW(rmsnorm_backward(Tensor(x.data(), {3, 7}), Tensor(w.data(), {7}), Tensor(rstd.data(), {3}),
                                Tensor(y.data(), {7, 3}), Tensor(y.data(), {3, 7}), Tensor(w.data(), {7})),
               Error);
  EXPECT_THROW(rmsnorm_forward(Tensor(x.data(), {3, 7}, DType::f32, Device::cuda), Tensor(w.data(), {7}), kEps,
                               Tensor(y.data(), {3, 7}), Tensor(rstd.data(), {3})),
               Error);
}

}  // namespace
