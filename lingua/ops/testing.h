#pragma once
// Helpers shared by the op tests: seeded random inputs, a central finite-difference gradient
// checker, and a relative-error comparison that gtest can report.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace lingua::test_util {

// Uniform values in [lo, hi) from a seeded std::mt19937 (reproducible across runs).
inline void fill_random(std::vector<float>& v, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& x : v) x = dist(rng);
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  fill_random(v, seed, lo, hi);
  return v;
}

// Integers uniform in [lo, hi].
inline std::vector<int32_t> random_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

// sum(a * b) in double: the scalar loss L = sum(out * R) whose gradient with respect to out is R.
inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double)a[i] * b[i];
  return s;
}

// dL/dx_i by central differences. loss() must run the fp32 forward reading x and return L in
// double. The step actually taken is the difference of the two perturbed floats (not 2 eps), so
// the rounding of x_i +- eps does not bias the estimate. x is restored afterwards.
inline std::vector<double> numeric_gradient(std::vector<float>& x, const std::function<double()>& loss,
                                            float eps = 1e-3f) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float orig = x[i];
    const float hi = orig + eps, lo = orig - eps;
    x[i] = hi;
    const double lhi = loss();
    x[i] = lo;
    const double llo = loss();
    x[i] = orig;
    grad[i] = (lhi - llo) / ((double)hi - (double)lo);
  }
  return grad;
}

// max_i |actual_i - expected_i| / max_i |expected_i|: an error relative to the tensor's scale,
// robust to individual elements near zero.
template <class A, class E>
double max_rel_error(const A& actual, const E& expected) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff = std::max(diff, std::fabs((double)actual[i] - (double)expected[i]));
    scale = std::max(scale, std::fabs((double)expected[i]));
  }
  return diff / std::max(scale, 1e-30);
}

// EXPECT_TRUE(close(actual, expected, tol, "dq")): passes when max_rel_error <= tol (and the sizes
// match, and nothing is NaN); the failure message names the worst element.
template <class A, class E>
::testing::AssertionResult close(const A& actual, const E& expected, double tol, const std::string& what) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << what << ": size " << actual.size() << " vs expected " << expected.size();
  size_t worst = 0;
  double worst_diff = -1, scale = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double d = std::fabs((double)actual[i] - (double)expected[i]);
    if (std::isnan(d)) return ::testing::AssertionFailure() << what << ": NaN at index " << i;
    if (d > worst_diff) worst_diff = d, worst = i;
    scale = std::max(scale, std::fabs((double)expected[i]));
  }
  const double err = max_rel_error(actual, expected);
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << err << " > " << tol << " (worst index "
                                       << worst << ": got " << actual[worst] << ", expected " << expected[worst]
                                       << ", scale " << scale << ")";
}

}  // namespace lingua::test_util
