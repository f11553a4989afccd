// AdamW and the gradient-norm reductions on CUDA against the CPU reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

// A GPU vector of n elements of dtype f32 or bf16, `offset` elements into its buffer (to misalign).
struct Dev {
  DeviceBuffer buf;
  Tensor t;
  Dev(int64_t n, DType dt, int64_t offset = 0) : t(nullptr, {n}, dt, Device::cuda) {
    buf = DeviceBuffer((n + offset) * dtype_size(dt) + 16);
    t.data = static_cast<char*>(buf.data()) + offset * dtype_size(dt);
  }
  void upload(const std::vector<float>& v) {
    ASSERT_EQ((int64_t)v.size(), t.numel());
    ASSERT_EQ(t.dtype, DType::f32);
    copy_to_device(t.data, v.data(), v.size() * 4);
  }
  std::vector<float> download() const {
    std::vector<float> v(t.numel());
    copy_to_host(v.data(), t.data, v.size() * 4);
    return v;
  }
  std::vector<uint16_t> download_bf16() const {
    std::vector<uint16_t> v(t.numel());
    copy_to_host(v.data(), t.data, v.size() * 2);
    return v;
  }
  void poison() {  // all-ones bytes: NaN in f32 and bf16
    std::vector<uint8_t> p(t.nbytes(), 0xFF);
    copy_to_device(t.data, p.data(), p.size());
  }
};

// Bitwise equality of float vectors (NaN-safe), naming the first difference.
::testing::AssertionResult same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0)
      return ::testing::AssertionFailure() << what << ": index " << i << ": " << a[i] << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

TEST(AdamWCuda, MatchesCpuBitwiseOverSeveralSteps) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (int64_t n : {1, 3, 37, 4099, 100003})
    for (int64_t offset : {0, 1})  // offset 1: misaligned, element by element
      for (bool with_bf16 : {false, true}) {
        auto p = random_vector(n, 1);
        std::vector<float> m(n, 0.0f), v(n, 0.0f);
        Dev dp(n, DType::f32, offset), dg(n, DType::f32, offset), dm(n, DType::f32), dv(n, DType::f32),
            db(n, DType::bf16, offset);
        dp.upload(p);
        dm.upload(m);
        dv.upload(v);
        AdamWHyper h{3e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0};
        for (int step = 1; step <= 3; ++step) {
          h.step = step;
          h.grad_scale = step % 2 ? 1.0f : 0.3f;
          auto grad = random_vector(n, 100 + step, -2.0f, 2.0f);
          dg.upload(grad);
          db.poison();
          adamw_update(Tensor(p.data(), {n}), Tensor(grad.data(), {n}), Tensor(m.data(), {n}), Tensor(v.data(), {n}),
                       h);
          adamw_update(dp.t, dg.t, dm.t, dv.t, h, with_bf16 ? db.t : Tensor());
          const std::string what = "n " + std::to_string(n) + " offset " + std::to_string(offset) + " step " +
                                   std::to_string(step);
          // The same fp32 operations, each rounded: bitwise equal to the CPU (x86-64 host code has no FMA).
          EXPECT_TRUE(same_bits(dp.download(), p, "param " + what));
          EXPECT_TRUE(same_bits(dm.download(), m, "m " + what));
          EXPECT_TRUE(same_bits(dv.download(), v, "v " + what));
          if (with_bf16) {
            const auto b = db.download_bf16();
            for (int64_t i = 0; i < n; ++i) ASSERT_EQ(b[i], float_to_bf16(p[i])) << what << " at " << i;
          }
        }
      }
}

TEST(AdamWCuda, SumSquaresMatchesCpuAndIsDeterministic) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (int64_t n : {0, 1, 3, 31, 16384, 16385, 1000003}) {
    auto x = random_vector(n, 7, -3.0f, 3.0f);
    const double ref = sum_squares(Tensor(x.data(), {n}));
    Dev a(n, DType::f32), b(n, DType::f32, 1);
    a.upload(x);
    b.upload(x);
    const double s = sum_squares(a.t);
    EXPECT_NEAR(s, ref, 1e-12 * ref) << n;
    const double again = sum_squares(a.t);
    EXPECT_EQ(0, std::memcmp(&s, &again, sizeof s)) << "two runs differ, n " << n;
    const double misaligned = sum_squares(b.t);
    EXPECT_EQ(0, std::memcmp(&s, &misaligned, sizeof s)) << "alignment changes the sum, n " << n;
  }
}

TEST(AdamWCuda, DeviceClippingMatchesHostClipping) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const std::vector<int64_t> sizes = {1000003, 7, 16385, 64};
  std::vector<std::vector<float>> grads;
  std::vector<Dev> dgrads;
  dgrads.reserve(sizes.size());
  double host_sq = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    grads.push_back(random_vector(sizes[k], 20 + k, -1.0f, 1.0f));
    dgrads.emplace_back(sizes[k], DType::f32);
    dgrads.back().upload(grads.back());
    host_sq += sum_squares(Tensor(grads.back().data(), {sizes[k]}));
  }
  DeviceBuffer scratch(64);
  double* sq = scratch.as<double>();
  double* norm = sq + 1;
  float* coef = reinterpret_cast<float*>(sq + 2);
  auto device_total = [&] {
    for (size_t k = 0; k < sizes.size(); ++k) sum_squares_device(dgrads[k].t, sq, k > 0);
    double s;
    copy_to_host(&s, sq, sizeof s);
    return s;
  };
  const double s1 = device_total(), s2 = device_total();
  EXPECT_EQ(0, std::memcmp(&s1, &s2, sizeof s1)) << "two runs differ";
  EXPECT_NEAR(s1, host_sq, 1e-12 * host_sq);
  // Each tensor's sum is added in call order: equal to the host sum of the per-tensor results.
  double chained = 0;
  for (auto& d : dgrads) chained += sum_squares(d.t);
  EXPECT_EQ(s1, chained);

  for (double max_norm : {0.0, 1.0, 1e6}) {
    clip_coefficient_device(sq, max_norm, coef, norm);
    float c;
    double nrm;
    copy_to_host(&c, coef, sizeof c);
    copy_to_host(&nrm, norm, sizeof nrm);
    EXPECT_EQ(nrm, std::sqrt(s1));
    EXPECT_EQ(c, clip_coefficient(std::sqrt(s1), max_norm)) << max_norm;
  }

  // AdamW reading the coefficient from device memory: the same as the CPU given its value.
  clip_coefficient_device(sq, 1.0, coef, nullptr);
  float c;
  copy_to_host(&c, coef, sizeof c);
  ASSERT_LT(c, 1.0f);
  const int64_t n = sizes[0];
  auto p = random_vector(n, 30);
  std::vector<float> m(n, 0.1f), v(n, 0.2f);
  Dev dp(n, DType::f32), dm(n, DType::f32), dv(n, DType::f32);
  dp.upload(p);
  dm.upload(m);
  dv.upload(v);
  AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 4};
  h.grad_scale_device = coef;
  adamw_update(dp.t, dgrads[0].t, dm.t, dv.t, h);
  h.grad_scale_device = nullptr;
  h.grad_scale = c;
  adamw_update(Tensor(p.data(), {n}), Tensor(grads[0].data(), {n}), Tensor(m.data(), {n}), Tensor(v.data(), {n}), h);
  EXPECT_TRUE(same_bits(dp.download(), p, "param"));
  EXPECT_TRUE(same_bits(dm.download(), m, "m"));
  EXPECT_TRUE(same_bits(dv.download(), v, "v"));
}

// ---- per-step scalars from device memory (for CUDA graphs) ----

// lr of a decaying schedule at `step`.
float lr_at(int step) { return 3e-2f * (1.0f - 0.15f * (float)step); }

TEST(AdamWCuda, StepScalarsFromDeviceMatchByValueBitwise) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const int steps = 4;
  PinnedBuffer slots(steps * sizeof(AdamWStepScalars));  // one per step: no slot is rewritten in flight
  DeviceBuffer scalars(sizeof(AdamWStepScalars));
  for (int64_t n : {1, 37, 100003})
    for (int64_t offset : {0, 1}) {
      const auto p = random_vector(n, 3);
      const std::vector<float> zeros(n, 0.0f);
      Dev pa(n, DType::f32, offset), ma(n, DType::f32), va(n, DType::f32), ba(n, DType::bf16, offset);
      Dev pb(n, DType::f32, offset), mb(n, DType::f32), vb(n, DType::f32), bb(n, DType::bf16, offset);
      Dev g(n, DType::f32, offset);
      pa.upload(p), pb.upload(p), ma.upload(zeros), mb.upload(zeros), va.upload(zeros), vb.upload(zeros);
      for (int step = 1; step <= steps; ++step) {
        g.upload(random_vector(n, 200 + step, -2.0f, 2.0f));
        AdamWHyper h{lr_at(step), 0.9f, 0.95f, 1e-8f, 0.1f, step};
        h.grad_scale = step % 2 ? 1.0f : 0.3f;
        adamw_update(pa.t, g.t, ma.t, va.t, h, ba.t);
        AdamWStepScalars* slot = slots.as<AdamWStepScalars>() + (step - 1);
        *slot = adamw_step_scalars(h);
        copy_to_device_async(scalars.data(), slot, sizeof *slot);
        AdamWHyper hd = h;
        hd.lr = NAN;  // not read with step_device
        hd.weight_decay = NAN;
        hd.step = 0;
        hd.step_device = scalars.as<AdamWStepScalars>();
        adamw_update(pb.t, g.t, mb.t, vb.t, hd, bb.t);
        const std::string what = "n " + std::to_string(n) + " offset " + std::to_string(offset) + " step " +
                                 std::to_string(step);
        EXPECT_TRUE(same_bits(pb.download(), pa.download(), "param " + what));
        EXPECT_TRUE(same_bits(mb.download(), ma.download(), "m " + what));
        EXPECT_TRUE(same_bits(vb.download(), va.download(), "v " + what));
        EXPECT_EQ(bb.download_bf16(), ba.download_bf16()) << what;
      }
    }
}

// A graph of the optimizer step (norm of all gradients, clip coefficient, AdamW reading the
// coefficient and the step scalars from device memory) replayed for 3 steps with new gradients and
// scalars is bitwise the same as 3 eager steps with by-value hyper-parameters.
TEST(AdamWCuda, CapturedClipAndUpdateReplaysBitwise) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const int steps = 3;
  const std::vector<int64_t> sizes = {100003, 4099};
  const size_t K = sizes.size();
  // per parameter: eager state (e) and graph state (q), one gradient buffer shared by both runs
  std::vector<Dev> pe, me, ve, pq, mq, vq, bq, be, grads;
  for (auto* list : {&pe, &me, &ve, &pq, &mq, &vq, &bq, &be, &grads}) list->reserve(K);
  for (size_t k = 0; k < K; ++k) {
    const int64_t n = sizes[k];
    const auto p = random_vector(n, 40 + k);
    const std::vector<float> zeros(n, 0.0f);
    for (auto* list : {&pe, &me, &ve, &pq, &mq, &vq, &grads}) list->emplace_back(n, DType::f32);
    be.emplace_back(n, DType::bf16);
    bq.emplace_back(n, DType::bf16);
    pe[k].upload(p), pq[k].upload(p);
    for (auto* list : {&me, &ve, &mq, &vq}) (*list)[k].upload(zeros);
  }
  auto grad_at = [&](size_t k, int step) { return random_vector(sizes[k], 300 + 10 * step + k, -1.0f, 1.0f); };
  const double max_norm = 50.0;  // below the gradient norm (~180): clipping is active
  // sq, norm (double), coef (float), step scalars in one buffer each per run
  struct Scalars {
    DeviceBuffer buf{256};
    double* sq() { return buf.as<double>(); }
    double* norm() { return buf.as<double>() + 1; }
    float* coef() { return reinterpret_cast<float*>(buf.as<double>() + 2); }
    AdamWStepScalars* step() { return reinterpret_cast<AdamWStepScalars*>(buf.as<double>() + 4); }
  } se, sq;
  auto hyper = [&](int step) { return AdamWHyper{lr_at(step), 0.9f, 0.95f, 1e-8f, 0.1f, step}; };
  // The optimizer step; with step_device, lr and step come from device memory.
  auto optimizer_step = [&](Scalars& s, std::vector<Dev>& p, std::vector<Dev>& m, std::vector<Dev>& v,
                            std::vector<Dev>& b, const AdamWHyper& h) {
    for (size_t k = 0; k < K; ++k) sum_squares_device(grads[k].t, s.sq(), k > 0);
    clip_coefficient_device(s.sq(), max_norm, s.coef(), s.norm());
    AdamWHyper hh = h;
    hh.grad_scale_device = s.coef();
    for (size_t k = 0; k < K; ++k) adamw_update(p[k].t, grads[k].t, m[k].t, v[k].t, hh, b[k].t);
  };

  std::vector<double> eager_norms;
  for (int step = 1; step <= steps; ++step) {  // eager; also sizes the sum-of-squares scratch
    for (size_t k = 0; k < K; ++k) grads[k].upload(grad_at(k, step));
    optimizer_step(se, pe, me, ve, be, hyper(step));
    double nrm;
    copy_to_host(&nrm, se.norm(), sizeof nrm);
    eager_norms.push_back(nrm);
  }
  float coef;
  copy_to_host(&coef, se.coef(), sizeof coef);
  EXPECT_LT(coef, 1.0f);

  CudaGraph g;
  g.begin_capture();
  AdamWHyper hd = hyper(1);
  hd.lr = NAN;
  hd.step = 0;
  hd.step_device = sq.step();
  optimizer_step(sq, pq, mq, vq, bq, hd);
  g.end_capture();
  ASSERT_TRUE(g.ready());

  PinnedBuffer slots(steps * sizeof(AdamWStepScalars));
  for (int step = 1; step <= steps; ++step) {
    for (size_t k = 0; k < K; ++k) grads[k].upload(grad_at(k, step));
    AdamWStepScalars* slot = slots.as<AdamWStepScalars>() + (step - 1);
    *slot = adamw_step_scalars(hyper(step));
    copy_to_device_async(sq.step(), slot, sizeof *slot);
    g.launch();
    double nrm;
    copy_to_host(&nrm, sq.norm(), sizeof nrm);
    EXPECT_EQ(0, std::memcmp(&nrm, &eager_norms[step - 1], sizeof nrm)) << "step " << step;
  }
  for (size_t k = 0; k < K; ++k) {
    const std::string what = " of parameter " + std::to_string(k);
    EXPECT_TRUE(same_bits(pq[k].download(), pe[k].download(), "param" + what));
    EXPECT_TRUE(same_bits(mq[k].download(), me[k].download(), "m" + what));
    EXPECT_TRUE(same_bits(vq[k].download(), ve[k].download(), "v" + what));
    EXPECT_EQ(bq[k].download_bf16(), be[k].download_bf16()) << what;
  }
}

TEST(AdamWCuda, Errors) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  Dev p(5, DType::f32), g(5, DType::f32), m(5, DType::f32), v(4, DType::f32), gb(5, DType::bf16), pb(5, DType::bf16);
  Dev pf(5, DType::f32), pb6(6, DType::bf16);
  AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
  EXPECT_THROW(adamw_update(p.t, g.t, m.t, v.t, h), Error);         // v has 4 elements
  EXPECT_THROW(adamw_update(p.t, gb.t, m.t, m.t, h), Error);        // grad bf16
  EXPECT_THROW(adamw_update(p.t, g.t, m.t, m.t, h, pf.t), Error);   // param_bf16 f32
  EXPECT_THROW(adamw_update(p.t, g.t, m.t, m.t, h, pb6.t), Error);  // param_bf16 of 6
  std::vector<float> host(5);
  EXPECT_THROW(adamw_update(p.t, Tensor(host.data(), {5}), m.t, m.t, h), Error);  // grad on the CPU
  try {
    adamw_update(p.t, gb.t, m.t, m.t, h);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("adamw_update: argument 'grad'"), std::string::npos) << e.what();
  }
  h.step = 0;
  EXPECT_THROW(adamw_update(p.t, g.t, m.t, m.t, h), Error);
  h.step = 1;
  EXPECT_NO_THROW(adamw_update(p.t, g.t, m.t, m.t, h, pb.t));
  EXPECT_THROW(sum_squares(Tensor(p.t.data, {5, 1}, DType::f32, Device::cuda)), Error);
  EXPECT_THROW(sum_squares(gb.t), Error);
  EXPECT_THROW(sum_squares_device(p.t, nullptr, false), Error);
  cuda_synchronize();
}

}  // namespace
