#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>

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
  // Read through step_device (host memory on the CPU), the constants give bitwise the by-value update.
  h.step = 7;
  std::vector<float> p = random_vector(5, 1), g = random_vector(5, 2), m(5, 0.1f), v(5, 0.2f);
  std::vector<float> p2 = p, m2 = m, v2 = v;
  adamw_update(Tensor(p.data(), {5}), Tensor(g.data(), {5}), Tensor(m.data(), {5}), Tensor(v.data(), {5}), h);
  AdamWHyper hp = h;
  hp.lr = hp.weight_decay = NAN;  // not read
  hp.step = 0;
  hp.step_device = &s;
  adamw_update(Tensor(p2.data(), {5}), Tensor(g.data(), {5}), Tensor(m2.data(), {5}), Tensor(v2.data(), {5}), hp);
  EXPECT_EQ(p, p2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
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
  // The copy must be bf16 [n].
  std::vector<float> pf(n);
  EXPECT_THROW(adamw_update(Tensor(p.data(), {n}), Tensor(g.data(), {n}), Tensor(m.data(), {n}),
                            Tensor(v.data(), {n}), h, Tensor(pf.data(), {n})),
               Error);
  EXPECT_THROW(adamw_update(Tensor(p.data(), {n}), Tensor(g.data(), {n}), Tensor(m.data(), {n}),
                            Tensor(v.data(), {n}), h, Tensor(pb.data(), {n - 1}, DType::bf16)),
               Error);
}

// Clipping that stays in the tensors' memory (host memory on the CPU): the sum of squares, the
// coefficient and the norm equal the host computation, and the coefficient read through
// grad_scale_device scales the gradient as grad_scale does.
TEST(AdamW, ClippingInTheTensorsMemoryMatchesTheHostValues) {
  const int64_t n = 37;
  auto a = random_vector(n, 50), b = random_vector(2 * n, 51);
  double sq = -1, norm = -1;
  float coef = -1;
  sum_squares_device(Tensor(a.data(), {n}), &sq, false);
  sum_squares_device(Tensor(b.data(), {2 * n}), &sq, true);
  const double want = sum_squares(Tensor(a.data(), {n})) + sum_squares(Tensor(b.data(), {2 * n}));
  EXPECT_EQ(sq, want);
  clip_coefficient_device(Device::cpu, &sq, 0.5, &coef, &norm);
  EXPECT_EQ(norm, std::sqrt(want));
  EXPECT_EQ(coef, clip_coefficient(std::sqrt(want), 0.5));
  EXPECT_LT(coef, 1.0f);
  std::vector<float> p = random_vector(n, 52), m(n, 0.0f), v(n, 0.0f), p2 = p, m2 = m, v2 = v;
  AdamWHyper h{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
  AdamWHyper hv = h;
  hv.grad_scale = coef;
  adamw_update(Tensor(p.data(), {n}), Tensor(a.data(), {n}), Tensor(m.data(), {n}), Tensor(v.data(), {n}), hv);
  h.grad_scale_device = &coef;
  adamw_update(Tensor(p2.data(), {n}), Tensor(a.data(), {n}), Tensor(m2.data(), {n}), Tensor(v2.data(), {n}), h);
  EXPECT_EQ(p, p2);
  EXPECT_EQ(v, v2);
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

// ---- row-sparse AdamW ----

// Bitwise equality (NaN-safe), naming the first difference.
template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& a, const std::vector<T>& b, const std::string& what) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure() << what << ": index " << i << ": " << a[i] << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

// A random mask of R rows with both touched and untouched rows; touched rows hold assorted
// nonzero values (any nonzero value means touched).
std::vector<int32_t> random_mask(int64_t R, uint32_t seed) {
  auto mask = random_ints(R, seed, -1, 2);
  for (auto& x : mask) x = x == 2 ? 0 : (x == 0 ? 1 : x * 7);  // about a quarter untouched
  mask[0] = 0;
  if (R > 1) mask[1] = 1;
  return mask;
}

TEST(AdamWRows, EqualsDenseUpdateOfEachTouchedRowAndLeavesTheOthers) {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{37, 13}, {1, 1}, {5, 4}, {300, 257}}) {
    const int64_t n = R * C;
    auto p = random_vector(n, 1), m = random_vector(n, 2, -0.5f, 0.5f), v = random_vector(n, 3, 0.01f, 1.0f);
    std::vector<uint16_t> pb(n, 0xFFFF);
    auto pe = p, me = m, ve = v;  // expected: adamw_update on each touched row's slice
    auto pbe = pb;
    for (int step = 1; step <= 3; ++step) {
      AdamWHyper h{3e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step + 4};
      h.grad_scale = step % 2 ? 1.0f : 0.3f;
      const auto g = random_vector(n, 10 + step, -2.0f, 2.0f);
      const auto mask = random_mask(R, 20 + step);
      const auto p0 = p, m0 = m, v0 = v;
      const auto pb0 = pb;
      adamw_update_rows(Tensor(p.data(), {R, C}), Tensor(g.data(), {R, C}), Tensor(m.data(), {R, C}),
                        Tensor(v.data(), {R, C}), Tensor(mask.data(), {R}), h, Tensor(pb.data(), {R, C}, DType::bf16));
      for (int64_t r = 0; r < R; ++r)
        if (mask[r] != 0)
          adamw_update(Tensor(pe.data() + r * C, {C}), Tensor(g.data() + r * C, {C}), Tensor(me.data() + r * C, {C}),
                       Tensor(ve.data() + r * C, {C}), h, Tensor(pbe.data() + r * C, {C}, DType::bf16));
      const std::string what = "R " + std::to_string(R) + " C " + std::to_string(C) + " step " + std::to_string(step);
      EXPECT_TRUE(same_bits(p, pe, "param " + what));
      EXPECT_TRUE(same_bits(m, me, "m " + what));
      EXPECT_TRUE(same_bits(v, ve, "v " + what));
      EXPECT_TRUE(same_bits(pb, pbe, "param_bf16 " + what));
      int64_t touched = 0;
      for (int64_t r = 0; r < R; ++r) {
        touched += mask[r] != 0;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = r * C + c;
          if (mask[r] == 0) {  // untouched rows: bitwise unchanged, bf16 copy not written
            ASSERT_EQ(0, std::memcmp(&p[i], &p0[i], 4)) << what << " row " << r;
            ASSERT_EQ(0, std::memcmp(&m[i], &m0[i], 4)) << what << " row " << r;
            ASSERT_EQ(0, std::memcmp(&v[i], &v0[i], 4)) << what << " row " << r;
            ASSERT_EQ(pb[i], pb0[i]) << what << " row " << r;
          } else {
            ASSERT_NE(0, std::memcmp(&p[i], &p0[i], 4)) << what << " row " << r;  // nonzero g: it moved
            ASSERT_EQ(pb[i], float_to_bf16(p[i])) << what << " row " << r;
          }
        }
      }
      if (R > 1) {
        EXPECT_GT(touched, 0) << what;
        EXPECT_LT(touched, R) << what;
      }
    }
  }
}

TEST(AdamWRows, AllRowsTouchedEqualsDenseUpdate) {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{37, 13}, {300, 257}}) {
    const int64_t n = R * C;
    auto p = random_vector(n, 4), m = random_vector(n, 5, -0.5f, 0.5f), v = random_vector(n, 6, 0.01f, 1.0f);
    auto pd = p, md = m, vd = v;
    std::vector<uint16_t> pb(n), pbd(n);
    const std::vector<int32_t> all(R, 1);
    for (int step = 1; step <= 3; ++step) {
      AdamWHyper h{1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, step};
      h.grad_scale = 0.7f;
      const auto g = random_vector(n, 30 + step, -1.0f, 1.0f);
      adamw_update_rows(Tensor(p.data(), {R, C}), Tensor(g.data(), {R, C}), Tensor(m.data(), {R, C}),
                        Tensor(v.data(), {R, C}), Tensor(all.data(), {R}), h, Tensor(pb.data(), {R, C}, DType::bf16));
      adamw_update(Tensor(pd.data(), {n}), Tensor(g.data(), {n}), Tensor(md.data(), {n}), Tensor(vd.data(), {n}), h,
                   Tensor(pbd.data(), {n}, DType::bf16));
      const std::string what = "R " + std::to_string(R) + " step " + std::to_string(step);
      EXPECT_TRUE(same_bits(p, pd, "param " + what));
      EXPECT_TRUE(same_bits(m, md, "m " + what));
      EXPECT_TRUE(same_bits(v, vd, "v " + what));
      EXPECT_TRUE(same_bits(pb, pbd, "param_bf16 " + what));
    }
  }
}

TEST(AdamWRows, Errors) {
  const int64_t R = 4, C = 3;
  std::vector<float> p(R * C, 1.0f), g(R * C, 1.0f), m(R * C), v(R * C);
  std::vector<int32_t> rows(R, 1), rows5(R + 1, 1);
  std::vector<uint16_t> pb(R * C);
  AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
  auto T = [](std::vector<float>& x, std::initializer_list<int64_t> dims) { return Tensor(x.data(), dims); };
  const Tensor rt(rows.data(), {R});
  EXPECT_NO_THROW(adamw_update_rows(T(p, {R, C}), T(g, {R, C}), T(m, {R, C}), T(v, {R, C}), rt, h));
  EXPECT_THROW(adamw_update_rows(T(p, {R * C}), T(g, {R * C}), T(m, {R * C}), T(v, {R * C}), rt, h), Error);
  EXPECT_THROW(adamw_update_rows(T(p, {R, C}), T(g, {C, R}), T(m, {R, C}), T(v, {R, C}), rt, h), Error);
  EXPECT_THROW(adamw_update_rows(T(p, {R, C}), T(g, {R, C}), T(m, {R, C}), T(v, {R, C - 1}), rt, h), Error);
  EXPECT_THROW(
      adamw_update_rows(T(p, {R, C}), T(g, {R, C}), T(m, {R, C}), T(v, {R, C}), Tensor(rows5.data(), {R + 1}), h),
      Error);
  EXPECT_THROW(adamw_update_rows(T(p, {R, C}), T(g, {R, C}), T(m, {R, C}), T(v, {R, C}),
                                 Tensor(rows.data(), {R}, DType::f32), h),
               Error);  // rows must be i32
  EXPECT_THROW(adamw_update_rows(T(p, {R, C}), T(g, {R, C}), T(m, {R, C}), T(v, {R, C}), rt, h,
                                 Tensor(pb.data(), {R * C}, DType::bf16)),
               Error);
  EXPECT_THROW(adamw_update_rows(T(p, {R, C}), T(g, {R, C}), T(m, {R, C}), T(v, {R, C}), rt, h, T(m, {R, C})),
               Error);  // param_bf16 must be bf16
  AdamWHyper h0 = h;
  h0.step = 0;
  EXPECT_THROW(adamw_update_rows(T(p, {R, C}), T(g, {R, C}), T(m, {R, C}), T(v, {R, C}), rt, h0), Error);
  EXPECT_THROW(sum_squares_rows(T(p, {R * C}), rt), Error);
  EXPECT_THROW(sum_squares_rows(T(p, {R, C}), Tensor(rows5.data(), {R + 1})), Error);
  // The twin that keeps the sum in the tensors' memory equals the host value (and accumulates).
  double sq = -1;
  sum_squares_rows_device(T(p, {R, C}), rt, &sq, false);
  EXPECT_EQ(sq, sum_squares_rows(T(p, {R, C}), rt));
  sum_squares_rows_device(T(p, {R, C}), rt, &sq, true);
  EXPECT_EQ(sq, 2 * sum_squares_rows(T(p, {R, C}), rt));
}

TEST(AdamWRows, SumSquaresRowsMatchesDoubleLoopAndIsDeterministic) {
  for (auto [R, C] : {std::pair<int64_t, int64_t>{37, 13}, {1, 1}, {3, 0}, {300, 2816}, {1001, 67}}) {
    const auto x = random_vector(R * C, 8, -3.0f, 3.0f);
    const auto mask = random_mask(R, 9);
    const Tensor xt(x.data(), {R, C});
    double ref = 0;
    for (int64_t r = 0; r < R; ++r)
      if (mask[r] != 0)
        for (int64_t c = 0; c < C; ++c) ref += (double)x[r * C + c] * x[r * C + c];
    const double s = sum_squares_rows(xt, Tensor(mask.data(), {R}));
    const std::string what = "R " + std::to_string(R) + " C " + std::to_string(C);
    EXPECT_NEAR(s, ref, 1e-12 * ref) << what;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const double one = sum_squares_rows(xt, Tensor(mask.data(), {R}));
    omp_set_num_threads(3);
    const double three = sum_squares_rows(xt, Tensor(mask.data(), {R}));
    omp_set_num_threads(saved);
    EXPECT_EQ(one, s) << what;
    EXPECT_EQ(three, s) << what;
    // no row marked: exactly 0; every row marked: the whole table's sum of squares
    const std::vector<int32_t> none(R, 0), all(R, 1);
    EXPECT_EQ(sum_squares_rows(xt, Tensor(none.data(), {R})), 0.0) << what;
    const double whole = sum_squares(Tensor(x.data(), {R * C}));
    EXPECT_NEAR(sum_squares_rows(xt, Tensor(all.data(), {R})), whole, 1e-12 * whole) << what;
  }
}

TEST(AdamWRows, MarkRows) {
  const int64_t R = 37;
  const std::vector<int32_t> ids = {5, 0, 36, 5, 17, 5, 0, 20};
  std::vector<int32_t> rows(R, 0);
  rows[30] = 1;  // set by an earlier micro-batch: kept
  mark_rows(Tensor(ids.data(), {(int64_t)ids.size()}), Tensor(rows.data(), {R}));
  for (int64_t r = 0; r < R; ++r) {
    const bool want = r == 0 || r == 5 || r == 17 || r == 20 || r == 30 || r == 36;
    EXPECT_EQ(rows[r], want ? 1 : 0) << "row " << r;
  }
  mark_rows(Tensor(ids.data(), {0}), Tensor(rows.data(), {R}));  // no ids: nothing to do
  // An id outside [0, R): an Error naming the position and the id, and nothing written.
  for (int32_t bad : {37, -1}) {
    const std::vector<int32_t> bad_ids = {1, 2, 3, bad, 4};
    std::vector<int32_t> r2(R, 0);
    try {
      mark_rows(Tensor(bad_ids.data(), {5}), Tensor(r2.data(), {R}));
      ADD_FAILURE() << "no error for id " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("mark_rows"), std::string::npos) << msg;
      EXPECT_NE(msg.find("at position 3"), std::string::npos) << msg;
      EXPECT_NE(msg.find("id " + std::to_string(bad)), std::string::npos) << msg;
    }
    EXPECT_EQ(r2, std::vector<int32_t>(R, 0)) << "written despite the bad id " << bad;
  }
  std::vector<float> fids(3);
  EXPECT_THROW(mark_rows(Tensor(fids.data(), {3}), Tensor(rows.data(), {R})), Error);  // ids must be i32
  EXPECT_THROW(mark_rows(Tensor(ids.data(), {2, 4}), Tensor(rows.data(), {R})), Error);
}

TEST(ClipCoefficient, Values) {
  EXPECT_EQ(clip_coefficient(10.0, 0.0), 1.0f);
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0f);
  EXPECT_NEAR(clip_coefficient(4.0, 1.0), 0.25f, 1e-6);
}

}  // namespace

// ---- skipping a step with non-finite gradients ----

// One group with a finite gradient, one whose gradient holds `bad` at one element: the guard turns
// both coefficients into NaN and neither update touches its tensors (the bf16 copy included).
// With both gradients finite it leaves the coefficients alone.
TEST(AdamW, NonFiniteGradientSkipsTheWholeStep) {
  for (float bad : {NAN, INFINITY, -INFINITY, 0.5f}) {
    const int64_t n = 37, R = 5, C = 7;
    auto ga = random_vector(n, 60), gb = random_vector(R * C, 61);
    gb[17] = bad;
    double sq[2];
    float coef[2];
    double norm[2];
    sum_squares_device(Tensor(ga.data(), {n}), &sq[0], false);
    std::vector<int32_t> rows = {1, 0, 1, 1, 0};
    sum_squares_rows_device(Tensor(gb.data(), {R, C}), Tensor(rows.data(), {R}), &sq[1], false);
    for (int i = 0; i < 2; ++i) clip_coefficient_device(Device::cpu, &sq[i], 1.0, &coef[i], &norm[i]);
    const float coef_before[2] = {coef[0], coef[1]};
    const double* sqs[2] = {&sq[0], &sq[1]};
    float* coefs[2] = {&coef[0], &coef[1]};
    skip_step_if_nonfinite_device(Device::cpu, sqs, coefs, 2);
    const bool finite = std::isfinite(bad);
    EXPECT_EQ(std::isnan(coef[0]), !finite) << bad;
    EXPECT_EQ(std::isnan(coef[1]), !finite) << bad;
    if (finite) EXPECT_TRUE(coef[0] == coef_before[0] && coef[1] == coef_before[1]);
    auto pa = random_vector(n, 62), pb = random_vector(R * C, 63);
    std::vector<float> ma(n, 0.1f), va(n, 0.2f), mb(R * C, 0.1f), vb(R * C, 0.2f);
    std::vector<uint16_t> bfa(n, 7), bfb(R * C, 7);
    const auto pa0 = pa, pb0 = pb, ma0 = ma, va0 = va, mb0 = mb, vb0 = vb;
    AdamWHyper h{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3};
    h.grad_scale_device = &coef[0];
    adamw_update(Tensor(pa.data(), {n}), Tensor(ga.data(), {n}), Tensor(ma.data(), {n}), Tensor(va.data(), {n}), h,
                 Tensor(bfa.data(), {n}, DType::bf16));
    h.grad_scale_device = &coef[1];
    adamw_update_rows(Tensor(pb.data(), {R, C}), Tensor(gb.data(), {R, C}), Tensor(mb.data(), {R, C}),
                      Tensor(vb.data(), {R, C}), Tensor(rows.data(), {R}), h, Tensor(bfb.data(), {R, C}, DType::bf16));
    if (finite) {
      EXPECT_NE(pa, pa0);
      EXPECT_NE(pb, pb0);
    } else {
      EXPECT_EQ(pa, pa0) << bad;
      EXPECT_EQ(ma, ma0) << bad;
      EXPECT_EQ(va, va0) << bad;
      EXPECT_EQ(pb, pb0) << bad;
      EXPECT_EQ(mb, mb0) << bad;
      EXPECT_EQ(vb, vb0) << bad;
      EXPECT_EQ(bfa, std::vector<uint16_t>(n, 7));
      EXPECT_EQ(bfb, std::vector<uint16_t>(R * C, 7));
    }
  }
  double sq = 1;
  float coef = 1;
  const double* sqs[1] = {&sq};
  float* coefs[1] = {&coef};
  EXPECT_THROW(skip_step_if_nonfinite_device(Device::cpu, sqs, coefs, kMaxGuardedGroups + 1), Error);
}
