#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>

#include "lingua/ops/cross_entropy/cross_entropy.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, D, V;
};

std::ostream& operator<<(std::ostream& os, Case c) { return os << "N" << c.N << " D" << c.D << " V" << c.V; }

struct Inputs {
  std::vector<float> x, w;
  std::vector<int32_t> targets;
};

// Every 5th row is ignored (target -1, or -100 as PyTorch's default ignore_index).
Inputs random_inputs(Case c, uint32_t seed) {
  Inputs in{random_vector(c.N * c.D, seed), random_vector(c.V * c.D, seed + 1),
            random_ints(c.N, seed + 2, 0, (int32_t)c.V - 1)};
  for (int64_t n = 3; n < c.N; n += 5) in.targets[n] = n % 2 ? -1 : -100;
  return in;
}

struct Result {
  double total;
  std::vector<float> nll, dx, dw;
};

// dx starts as garbage (it is written), dw as zeros (it is accumulated).
Result run(Inputs& in, Case c, float grad_scale, bool grads = true) {
  Result r{0, std::vector<float>(c.N, 5.0f), std::vector<float>(c.N * c.D, 9.0f), std::vector<float>(c.V * c.D, 0.0f)};
  r.total = output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                                 Tensor(in.targets.data(), {c.N}), Tensor(r.nll.data(), {c.N}), grad_scale,
                                 grads ? Tensor(r.dx.data(), {c.N, c.D}) : Tensor(),
                                 grads ? Tensor(r.dw.data(), {c.V, c.D}) : Tensor());
  return r;
}

// Logits by a triple loop and an explicit log-softmax, in double; the gradient of
// grad_scale * sum(nll) as dlogits = (softmax - onehot) * grad_scale.
struct Reference {
  double total = 0;
  std::vector<double> nll, dx, dw;
};

Reference reference(const Inputs& in, Case c, double grad_scale) {
  Reference ref{0, std::vector<double>(c.N, 0.0), std::vector<double>(c.N * c.D, 0.0),
                std::vector<double>(c.V * c.D, 0.0)};
  std::vector<double> logits(c.V);
  for (int64_t n = 0; n < c.N; ++n) {
    const int32_t target = in.targets[n];
    if (target < 0) continue;
    for (int64_t j = 0; j < c.V; ++j) {
      double s = 0;
      for (int64_t i = 0; i < c.D; ++i) s += (double)in.x[n * c.D + i] * in.w[j * c.D + i];
      logits[j] = s;
    }
    double sum = 0;
    for (int64_t j = 0; j < c.V; ++j) sum += std::exp(logits[j]);
    const double log_z = std::log(sum);
    ref.nll[n] = log_z - logits[target];
    ref.total += ref.nll[n];
    for (int64_t j = 0; j < c.V; ++j) {
      const double g = (std::exp(logits[j] - log_z) - (j == target)) * grad_scale;
      for (int64_t i = 0; i < c.D; ++i) {
        ref.dx[n * c.D + i] += g * in.w[j * c.D + i];
        ref.dw[j * c.D + i] += g * in.x[n * c.D + i];
      }
    }
  }
  return ref;
}

// Includes several chunks of rows (V = 97: 256 rows a chunk; V = 65537: 127 rows a chunk).
const Case kCases[] = {{1, 3, 5}, {3, 7, 11}, {33, 17, 50}, {300, 31, 97}, {130, 5, 65537}};

TEST(CrossEntropy, MatchesLogSoftmax) {
  for (Case c : kCases) {
    auto in = random_inputs(c, 1);
    auto r = run(in, c, 0.7f);
    auto ref = reference(in, c, 0.7);
    EXPECT_TRUE(close(r.nll, ref.nll, 1e-5, "nll")) << c;
    EXPECT_NEAR(r.total, ref.total, 1e-5 * std::fabs(ref.total)) << c;
    EXPECT_TRUE(close(r.dx, ref.dx, 1e-4, "dx")) << c;
    EXPECT_TRUE(close(r.dw, ref.dw, 1e-4, "dw")) << c;
    // total is the sum of the per-row nll, ignored rows are 0
    double sum = 0;
    for (int64_t n = 0; n < c.N; ++n) {
      sum += r.nll[n];
      if (in.targets[n] < 0) {
        EXPECT_EQ(r.nll[n], 0.0f) << n;
      }
    }
    EXPECT_NEAR(r.total, sum, 1e-9 * std::fabs(sum));
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  for (Case c : {Case{1, 3, 5}, Case{3, 7, 11}, Case{13, 9, 17}}) {
    auto in = random_inputs(c, 2);
    const float grad_scale = 0.7f;
    std::vector<float> nll(c.N);
    auto loss = [&] {
      return grad_scale * output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                                               Tensor(in.targets.data(), {c.N}), Tensor(nll.data(), {c.N}), grad_scale,
                                               Tensor(), Tensor());
    };
    auto num_dx = numeric_gradient(in.x, loss);
    auto num_dw = numeric_gradient(in.w, loss);
    auto r = run(in, c, grad_scale);
    EXPECT_TRUE(close(r.dx, num_dx, 5e-3, "dx")) << c;
    EXPECT_TRUE(close(r.dw, num_dw, 5e-3, "dw")) << c;
  }
}

TEST(CrossEntropy, IgnoredRowsContributeNothing) {
  const Case c{33, 17, 50};
  auto in = random_inputs(c, 3);
  auto r = run(in, c, 1.0f);
  // The same call on the kept rows only.
  Inputs kept;
  kept.w = in.w;
  for (int64_t n = 0; n < c.N; ++n)
    if (in.targets[n] >= 0) {
      kept.targets.push_back(in.targets[n]);
      kept.x.insert(kept.x.end(), in.x.begin() + n * c.D, in.x.begin() + (n + 1) * c.D);
    }
  const Case ck{(int64_t)kept.targets.size(), c.D, c.V};
  ASSERT_LT(ck.N, c.N);
  auto rk = run(kept, ck, 1.0f);
  // sgemm may round the logits of a different row count differently: equal up to fp32 rounding.
  EXPECT_NEAR(r.total, rk.total, 1e-6 * rk.total);
  EXPECT_TRUE(close(r.dw, rk.dw, 1e-5, "dw"));
  for (int64_t n = 0; n < c.N; ++n)
    if (in.targets[n] < 0) {
      for (int64_t i = 0; i < c.D; ++i) ASSERT_EQ(r.dx[n * c.D + i], 0.0f) << n;
    }
}

TEST(CrossEntropy, GradScaleScalesGradients) {
  const Case c{33, 17, 50};
  auto in = random_inputs(c, 4);
  auto one = run(in, c, 1.0f);
  auto scaled = run(in, c, 0.25f);
  EXPECT_EQ(one.nll, scaled.nll);
  std::vector<float> dx(one.dx.size()), dw(one.dw.size());
  for (size_t i = 0; i < dx.size(); ++i) dx[i] = 0.25f * one.dx[i];
  for (size_t i = 0; i < dw.size(); ++i) dw[i] = 0.25f * one.dw[i];
  EXPECT_TRUE(close(scaled.dx, dx, 1e-6, "dx"));
  EXPECT_TRUE(close(scaled.dw, dw, 1e-6, "dw"));
}

TEST(CrossEntropy, DwAccumulatesDxIsWritten) {
  const Case c{33, 17, 50};
  auto in = random_inputs(c, 5);
  auto once = run(in, c, 1.0f);
  std::vector<float> dx(c.N * c.D, 3.0f), dw(c.V * c.D, 0.0f);
  for (int call = 0; call < 2; ++call)
    output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                         Tensor(in.targets.data(), {c.N}), Tensor(), 1.0f, Tensor(dx.data(), {c.N, c.D}),
                         Tensor(dw.data(), {c.V, c.D}));
  std::vector<float> twice(dw.size());
  for (size_t i = 0; i < dw.size(); ++i) twice[i] = 2 * once.dw[i];
  EXPECT_TRUE(close(dw, twice, 1e-6, "dw twice"));
  EXPECT_TRUE(close(dx, once.dx, 0.0, "dx"));
  // Either gradient alone gives the same values.
  std::vector<float> dx_only(c.N * c.D), dw_only(c.V * c.D, 0.0f);
  output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                       Tensor(in.targets.data(), {c.N}), Tensor(), 1.0f, Tensor(dx_only.data(), {c.N, c.D}), Tensor());
  output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                       Tensor(in.targets.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor(dw_only.data(), {c.V, c.D}));
  EXPECT_EQ(dx_only, once.dx);
  EXPECT_EQ(dw_only, once.dw);
}

TEST(CrossEntropy, ForwardOnlyGivesTheSameLoss) {
  const Case c{300, 31, 97};
  auto in = random_inputs(c, 6);
  auto with_grads = run(in, c, 1.0f);
  auto eval = run(in, c, 1.0f, false);
  EXPECT_EQ(with_grads.total, eval.total);
  EXPECT_EQ(with_grads.nll, eval.nll);
  const double no_nll = output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                                             Tensor(in.targets.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor());
  EXPECT_EQ(no_nll, eval.total);
}

// Bitwise repeatable for a given thread count. Across thread counts only up to rounding: OpenBLAS
// (the OpenMP build) partitions the sgemm differently, and its edge kernels round differently.
TEST(CrossEntropy, RepeatableAndThreadCountOnlyRounds) {
  const Case c{130, 5, 65537};
  auto in = random_inputs(c, 7);
  auto first = run(in, c, 1.0f);
  auto again = run(in, c, 1.0f);
  EXPECT_EQ(first.total, again.total);
  EXPECT_EQ(first.nll, again.nll);
  EXPECT_EQ(first.dx, again.dx);
  EXPECT_EQ(first.dw, again.dw);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = run(in, c, 1.0f);
  omp_set_num_threads(3);
  auto three = run(in, c, 1.0f);
  omp_set_num_threads(saved);
  EXPECT_NEAR(one.total, three.total, 1e-6 * one.total);
  EXPECT_TRUE(close(three.nll, one.nll, 1e-6, "nll"));
  EXPECT_TRUE(close(three.dx, one.dx, 1e-5, "dx"));
  EXPECT_TRUE(close(three.dw, one.dw, 1e-5, "dw"));
}

// output_cross_entropy_sum: the returned total written to a host double, bitwise, or added to it.
TEST(CrossEntropy, SumFormMatchesTheReturnedLossAndAccumulates) {
  for (Case c : {Case{33, 17, 50}, Case{300, 31, 97}}) {
    auto in = random_inputs(c, 9), in2 = random_inputs(c, 10);
    const Result ref = run(in, c, 0.5f), ref2 = run(in2, c, 0.5f);
    std::vector<float> nll(c.N, 5.0f), dx(c.N * c.D, 9.0f), dw(c.V * c.D, 0.0f);
    auto call = [&](Inputs& i, double* sum, bool accumulate) {
      output_cross_entropy_sum(Tensor(i.x.data(), {c.N, c.D}), Tensor(i.w.data(), {c.V, c.D}),
                               Tensor(i.targets.data(), {c.N}), Tensor(nll.data(), {c.N}), 0.5f,
                               Tensor(dx.data(), {c.N, c.D}), Tensor(dw.data(), {c.V, c.D}), sum, accumulate);
    };
    double sum = 123.0;  // overwritten
    call(in, &sum, false);
    EXPECT_EQ(0, std::memcmp(&sum, &ref.total, sizeof sum)) << c << ": " << sum << " vs " << ref.total;
    EXPECT_EQ(nll, ref.nll) << c;
    EXPECT_EQ(dx, ref.dx) << c;
    EXPECT_EQ(dw, ref.dw) << c;
    call(in2, &sum, true);
    const double expected = ref.total + ref2.total;
    EXPECT_EQ(0, std::memcmp(&sum, &expected, sizeof sum)) << c;
    EXPECT_EQ(nll, ref2.nll) << c;
  }
  const Case c{4, 3, 5};
  auto in = random_inputs(c, 11);
  Tensor X(in.x.data(), {c.N, c.D}), W(in.w.data(), {c.V, c.D}), T(in.targets.data(), {c.N});
  EXPECT_THROW(output_cross_entropy_sum(X, W, T, Tensor(), 1.0f, Tensor(), Tensor(), nullptr, false), Error);
  std::vector<int32_t> bad = {0, 4, 1, 5};
  double sum = 0;
  EXPECT_THROW(output_cross_entropy_sum(X, W, Tensor(bad.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor(), &sum,
                                        false),
               Error);  // the CPU path still checks the targets
}

TEST(CrossEntropy, Errors) {
  const Case c{4, 3, 5};
  auto in = random_inputs(c, 8);
  std::vector<float> nll(c.N), dx(c.N * c.D), dw(c.V * c.D);
  Tensor X(in.x.data(), {c.N, c.D}), W(in.w.data(), {c.V, c.D});
  std::vector<int32_t> bad = {0, 4, 1, 5};
  EXPECT_THROW(output_cross_entropy(X, W, Tensor(bad.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor()), Error);
  try {
    output_cross_entropy(X, W, Tensor(bad.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor());
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("row 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("target 5"), std::string::npos) << msg;
  }
  Tensor T(in.targets.data(), {c.N});
  EXPECT_THROW(output_cross_entropy(X, Tensor(in.w.data(), {c.D, c.V}), T, Tensor(), 1.0f, Tensor(), Tensor()), Error);
  EXPECT_THROW(output_cross_entropy(X, W, Tensor(in.targets.data(), {c.N - 1}), Tensor(), 1.0f, Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(nll.data(), {c.N + 1}), 1.0f, Tensor(), Tensor()), Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, Tensor(dx.data(), {c.D, c.N}), Tensor()), Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, Tensor(), Tensor(dw.data(), {c.V, c.D + 1})), Error);
  EXPECT_THROW(output_cross_entropy(X, W, Tensor(in.x.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor()), Error);
  EXPECT_THROW(output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}, DType::f32, Device::cuda), W, T, Tensor(), 1.0f,
                                    Tensor(), Tensor()),
               Error);
}

}  // namespace
