#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "lingua/core/bf16.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

// One AdamW step in double, written from the formula in adamw.h.
void reference_step(std::vector<double>& p, const std::vector<float>& grad, std::vector<double>& m,
                    std::vector<double>& v, const AdamWHyper& h) {
  const double lr = h.lr, b1 = h.beta1, b2 = h.beta2, eps = h.eps, wd = h.weight_decay;
  for (size_t i = 0; i < p.size(); ++i) {
    const double g = (double)grad[i] * h.grad_scale;
    p[i] -= lr * wd * p[i];
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    const double m_hat = m[i] / (1 - std::pow(b1, (double)h.step));
    const double v_hat = v[i] / (1 - std::pow(b2, (double)h.step));
    p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

TEST(AdamW, MatchesDoubleReferenceOverSeveralSteps) {
  for (int64_t n : {1, 3, 37, 100003}) {
    auto p = random_vector(n, 1);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<double> p_ref(p.begin(), p.end()), m_ref(n, 0.0), v_ref(n, 0.0);
    AdamWHyper h{3e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0};
    for (int step = 1; step <= 5; ++step) {
      h.step = step;
      h.grad_scale = step % 2 ? 1.0f : 0.3f;  // clipping on some steps
      auto grad = random_vector(n, 100 + step, -2.0f, 2.0f);
      adamw_update(Tensor(p.data(), {n}), Tensor(grad.data(), {n}), Tensor(m.data(), {n}), Tensor(v.data(), {n}), h);
      reference_step(p_ref, grad, m_ref, v_ref, h);
      EXPECT_TRUE(close(p, p_ref, 1e-6, "param")) << "n " << n << " step " << step;
      EXPECT_TRUE(close(m, m_ref, 1e-6, "m")) << "n " << n << " step " << step;
      EXPECT_TRUE(close(v, v_ref, 1e-6, "v")) << "n " << n << " step " << step;
    }
  }
}

TEST(AdamW, FirstStepByHand) {
  // step 1: m_hat = g, v_hat = g^2, so p' = p (1 - lr wd) - lr g / (|g| + eps).
  std::vector<float> p = {0.5f, -2.0f, 1.0f}, g = {0.2f, -4.0f, 1e-3f}, m(3, 0.0f), v(3, 0.0f);
  AdamWHyper h{0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, 1, 2.0f};
  adamw_update(Tensor(p.data(), {3}), Tensor(g.data(), {3}), Tensor(m.data(), {3}), Tensor(v.data(), {3}), h);
  EXPECT_NEAR(p[0], 0.5 * 0.95 - 0.1, 1e-6);
  EXPECT_NEAR(p[1], -2.0 * 0.95 + 0.1, 1e-6);
  EXPECT_NEAR(p[2], 1.0 * 0.95 - 0.1 * 2e-3 / (2e-3 + 1e-8), 1e-6);
  EXPECT_NEAR(m[1], 0.1 * -8.0, 1e-6);
  EXPECT_NEAR(v[1], 0.001 * 64.0, 1e-6);
}

TEST(AdamW, Errors) {
  std::vector<float> p(5, 1.0f), g(5, 1.0f), m(5), v(4);
  AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
  EXPECT_THROW(
      adamw_update(Tensor(p.data(), {5}), Tensor(g.data(), {5}), Tensor(m.data(), {5}), Tensor(v.data(), {4}), h),
      Error);
  EXPECT_THROW(
      adamw_update(Tensor(p.data(), {5}), Tensor(g.data(), {1, 5}), Tensor(m.data(), {5}), Tensor(m.data(), {5}), h),
      Error);
  h.step = 0;
  EXPECT_THROW(
      adamw_update(Tensor(p.data(), {5}), Tensor(g.data(), {5}), Tensor(m.data(), {5}), Tensor(m.data(), {5}), h),
      Error);
  h.step = 1;
  EXPECT_THROW(adamw_update(Tensor(p.data(), {5}, DType::f32, Device::cuda), Tensor(g.data(), {5}),
                            Tensor(m.data(), {5}), Tensor(m.data(), {5}), h),
               Error);
  EXPECT_THROW(sum_squares(Tensor(p.data(), {5, 1})), Error);
}

TEST(AdamW, StepScalars) {
  AdamWHyper h{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7};
  const AdamWStepScalars s = adamw_step_scalars(h);
  EXPECT_EQ(s.decay, (float)(1.0 - (double)3e-3f * 0.1f));
  EXPECT_EQ(s.step_size, (float)(3e-3f / (1.0 - std::pow((double)0.9f, 7.0))));
  EXPECT_EQ(s.inv_sqrt_bc2, (float)(1.0 / std::sqrt(1.0 - std::pow((double)0.95f, 7.0))));
  h.step = 0;
  EXPECT_THROW(adamw_step_scalars(h), Error);
  // step_device is for the CUDA path only
  h.step = 1;
  std::vector<float> p(5, 1.0f), g(5, 1.0f), m(5), v(5);
  h.step_device = &s;
  EXPECT_THROW(
      adamw_update(Tensor(p.data(), {5}), Tensor(g.data(), {5}), Tensor(m.data(), {5}), Tensor(v.data(), {5}), h),
      Error);
}

TEST(AdamW, WritesTheBf16CopyOfTheUpdatedParam) {
  const int64_t n = 37;
  auto p = random_vector(n, 40), g = random_vector(n, 41);
  std::vector<float> m(n, 0.0f), v(n, 0.0f), p2 = p, m2 = m, v2 = v;
  std::vector<uint16_t> pb(n, 0xFFFF);
  AdamWHyper h{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
  adamw_update(Tensor(p.data(), {n}), Tensor(g.data(), {n}), Tensor(m.data(), {n}), Tensor(v.data(), {n}), h,
               Tensor(pb.data(), {n}, DType::bf16));
  adamw_update(Tensor(p2.data(), {n}), Tensor(g.data(), {n}), Tensor(m2.data(), {n}), Tensor(v2.data(), {n}), h);
  EXPECT_EQ(p, p2);  // the copy changes nothing else
  EXPECT_EQ(m, m2);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(pb[i], float_to_bf16(p[i])) << i;
  // The copy must be bf16 [n]; grad_scale_device is for CUDA only; device clipping needs CUDA tensors.
  std::vector<float> pf(n);
  EXPECT_THROW(adamw_update(Tensor(p.data(), {n}), Tensor(g.data(), {n}), Tensor(m.data(), {n}),
                            Tensor(v.data(), {n}), h, Tensor(pf.data(), {n})),
               Error);
  EXPECT_THROW(adamw_update(Tensor(p.data(), {n}), Tensor(g.data(), {n}), Tensor(m.data(), {n}),
                            Tensor(v.data(), {n}), h, Tensor(pb.data(), {n - 1}, DType::bf16)),
               Error);
  const float coef = 0.5f;
  h.grad_scale_device = &coef;
  EXPECT_THROW(adamw_update(Tensor(p.data(), {n}), Tensor(g.data(), {n}), Tensor(m.data(), {n}),
                            Tensor(v.data(), {n}), h),
               Error);
  double sq = 0;
  EXPECT_THROW(sum_squares_device(Tensor(p.data(), {n}), &sq, false), Error);
}

TEST(SumSquares, MatchesDoubleLoopAndIsDeterministic) {
  for (int64_t n : {0, 1, 3, 31, 16384, 16385, 1000003}) {
    auto x = random_vector(n, 7, -3.0f, 3.0f);
    double ref = 0;
    for (float a : x) ref += (double)a * a;
    const double s = sum_squares(Tensor(x.data(), {n}));
    EXPECT_NEAR(s, ref, 1e-12 * ref) << n;
    EXPECT_EQ(s, sum_squares(Tensor(x.data(), {n}))) << n;  // bitwise, call to call
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const double one = sum_squares(Tensor(x.data(), {n}));
    omp_set_num_threads(3);
    const double three = sum_squares(Tensor(x.data(), {n}));
    omp_set_num_threads(saved);
    EXPECT_EQ(one, s) << n;
    EXPECT_EQ(three, s) << n;
  }
}

TEST(ClipCoefficient, Values) {
  EXPECT_EQ(clip_coefficient(10.0, 0.0), 1.0f);
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0f);
  EXPECT_NEAR(clip_coefficient(4.0, 1.0), 0.25f, 1e-6);
}

}  // namespace
