// AdamW and the gradient-norm reductions on CUDA against the CPU reference (the op-test harness,
// bitwise for the updates), and the GPU's own guarantees: deterministic sums, clipping and step
// scalars read from device memory, captured optimizer steps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/backend_test.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

// adamw_update over `steps` steps (a new gradient each, grad_scale 1 or 0.3), bitwise against the
// CPU: the same fp32 operations, each rounded (x86-64 host code has no FMA). The bf16 copy of the
// parameter is written at every step when asked for.
std::vector<OpCase> update_cases() {
  std::vector<OpCase> cs;
  for (int64_t n : {1, 3, 37, 4099, 100003})
    for (int64_t offset : {0, 1})  // offset 1: misaligned, element by element
      for (bool with_bf16 : {false, true})
        for (int steps = 1; steps <= 3; ++steps) {
          OpCase& k = cs.emplace_back("adamw_update", std::to_string(steps) + " steps");
          k.out("param", {n}).accumulated().uniform(-1.0f, 1.0f, 1).offset(offset).exact();
          k.out("m", {n}).accumulated().fill(0.0f).exact();
          k.out("v", {n}).accumulated().fill(0.0f).exact();
          for (int step = 1; step <= steps; ++step)
            k.in("grad" + std::to_string(step), {n}).uniform(-2.0f, 2.0f, 100 + step).offset(offset);
          if (with_bf16) k.out("param_bf16", {n}, DType::bf16).cpu_dtype(DType::bf16).offset(offset).exact();
          k.run = [steps](OpArgs& a) {
            AdamWHyper h{3e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0};
            for (int step = 1; step <= steps; ++step) {
              h.step = step;
              h.grad_scale = step % 2 ? 1.0f : 0.3f;
              adamw_update(a["param"], a["grad" + std::to_string(step)], a["m"], a["v"], h, a.opt("param_bf16"));
            }
          };
        }
  return cs;
}

// The sum in double within 1e-12 of the CPU's (another fixed order).
std::vector<OpCase> sum_squares_cases() {
  std::vector<OpCase> cs;
  for (int64_t n : {0, 1, 3, 31, 16384, 16385, 1000003}) {
    OpCase& k = cs.emplace_back("sum_squares");
    k.in("x", {n}).uniform(-3.0f, 3.0f, 7);
    k.scalar("sum", 1e-12);
    k.run = [](OpArgs& a) { a.set("sum", sum_squares(a["x"])); };
  }
  return cs;
}

LINGUA_OP_TEST(AdamW, MatchesCpuBitwiseOverSeveralSteps, update_cases())
LINGUA_OP_TEST(AdamW, SumSquaresMatchesCpu, sum_squares_cases())

// Two runs and a misaligned copy of x give the same bits.
TEST(AdamWCuda, SumSquaresIsDeterministic) {
  LINGUA_REQUIRE_GPU();
  for (int64_t n : {0, 1, 3, 31, 16384, 16385, 1000003}) {
    const auto x = random_vector(n, 7, -3.0f, 3.0f);
    DeviceTensor a({n}, DType::f32), b({n}, DType::f32, 1);
    a.upload(x);
    b.upload(x);
    const double s = sum_squares(a.t);
    EXPECT_TRUE(same_bits(sum_squares(a.t), s, "two runs, n " + std::to_string(n)));
    EXPECT_TRUE(same_bits(sum_squares(b.t), s, "misaligned, n " + std::to_string(n)));
  }
}

TEST(AdamWCuda, DeviceClippingMatchesHostClipping) {
  LINGUA_REQUIRE_GPU();
  const std::vector<int64_t> sizes = {1000003, 7, 16385, 64};
  std::vector<std::vector<float>> grads;
  std::vector<DeviceTensor> dgrads;
  dgrads.reserve(sizes.size());
  double host_sq = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    grads.push_back(random_vector(sizes[k], 20 + k, -1.0f, 1.0f));
    dgrads.emplace_back(std::vector<int64_t>{sizes[k]}, DType::f32);
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
  DeviceTensor dp({n}, DType::f32), dm({n}, DType::f32), dv({n}, DType::f32);
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
  LINGUA_REQUIRE_GPU();
  const int steps = 4;
  PinnedBuffer slots(steps * sizeof(AdamWStepScalars));  // one per step: no slot is rewritten in flight
  DeviceBuffer scalars(sizeof(AdamWStepScalars));
  for (int64_t n : {1, 37, 100003})
    for (int64_t offset : {0, 1}) {
      const auto p = random_vector(n, 3);
      const std::vector<float> zeros(n, 0.0f);
      DeviceTensor pa({n}, DType::f32, offset), ma({n}, DType::f32), va({n}, DType::f32), ba({n}, DType::bf16, offset);
      DeviceTensor pb({n}, DType::f32, offset), mb({n}, DType::f32), vb({n}, DType::f32), bb({n}, DType::bf16, offset);
      DeviceTensor g({n}, DType::f32, offset);
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
        EXPECT_EQ(bb.bytes(), ba.bytes()) << what;
      }
    }
}

// A graph of the optimizer step (norm of all gradients, clip coefficient, AdamW reading the
// coefficient and the step scalars from device memory) replayed for 3 steps with new gradients and
// scalars is bitwise the same as 3 eager steps with by-value hyper-parameters.
TEST(AdamWCuda, CapturedClipAndUpdateReplaysBitwise) {
  LINGUA_REQUIRE_GPU();
  const int steps = 3;
  const std::vector<int64_t> sizes = {100003, 4099};
  const size_t K = sizes.size();
  // per parameter: eager state (e) and graph state (q), one gradient buffer shared by both runs
  using Params = std::vector<DeviceTensor>;
  Params pe, me, ve, pq, mq, vq, bq, be, grads;
  for (auto* list : {&pe, &me, &ve, &pq, &mq, &vq, &bq, &be, &grads}) list->reserve(K);
  for (size_t k = 0; k < K; ++k) {
    const int64_t n = sizes[k];
    const auto p = random_vector(n, 40 + k);
    const std::vector<float> zeros(n, 0.0f);
    for (auto* list : {&pe, &me, &ve, &pq, &mq, &vq, &grads}) list->emplace_back(std::vector<int64_t>{n}, DType::f32);
    be.emplace_back(std::vector<int64_t>{n}, DType::bf16);
    bq.emplace_back(std::vector<int64_t>{n}, DType::bf16);
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
  auto optimizer_step = [&](Scalars& s, Params& p, Params& m, Params& v, Params& b, const AdamWHyper& h) {
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
    EXPECT_EQ(bq[k].bytes(), be[k].bytes()) << what;
  }
}

// ---- row-sparse AdamW ----

// A random mask of R rows with both touched and untouched rows (any nonzero value means touched).
std::vector<int32_t> random_mask(int64_t R, uint32_t seed) {
  auto mask = random_ints(R, seed, -1, 2);
  for (auto& x : mask) x = x == 2 ? 0 : (x == 0 ? 1 : x * 7);  // about a quarter untouched
  mask[0] = 0;
  if (R > 1) mask[1] = 1;
  return mask;
}

// adamw_update_rows over `steps` steps with a new gradient and mask each, bitwise against the CPU;
// variant 0: by-value hyper-parameters, 1: grad_scale_device, 2: step_device, 3: both (on the GPU;
// the CPU gets the same values by value). The bf16 copy, given at the last step only, starts as
// all-ones bytes: untouched rows must keep them.
std::vector<OpCase> rows_update_cases() {
  struct Case {
    int64_t R, C, offset;
  };
  std::vector<OpCase> cs;
  // C % 4 == 0 and aligned: float4; offset 1 or C % 4 != 0: element by element; C = 9000: three
  // column chunks; R = 1: no row touched (random_mask leaves row 0 untouched).
  for (const Case c : {Case{37, 13, 0}, Case{300, 2816, 0}, Case{300, 2816, 1}, Case{64, 130, 0}, Case{37, 13, 1},
                       Case{5, 9000, 0}, Case{1, 3, 0}})
    for (int variant = 0; variant < 4; ++variant)
      for (bool with_bf16 : {false, true})
        for (int steps = 1; steps <= 3; ++steps) {
          const int64_t R = c.R, C = c.C;
          OpCase& k = cs.emplace_back("adamw_update_rows",
                                      "variant " + std::to_string(variant) + ", " + std::to_string(steps) + " steps");
          k.out("param", {R, C}).accumulated().uniform(-1.0f, 1.0f, 1).offset(c.offset).exact();
          k.out("m", {R, C}).accumulated().uniform(-0.5f, 0.5f, 2).offset(c.offset).exact();
          k.out("v", {R, C}).accumulated().uniform(0.01f, 1.0f, 3).exact();
          for (int step = 1; step <= steps; ++step) {
            k.in("grad" + std::to_string(step), {R, C}).uniform(-2.0f, 2.0f, 100 + step).offset(c.offset);
            k.in("rows" + std::to_string(step), {R}, DType::i32).values(random_mask(R, 50 + step));
          }
          if (with_bf16)
            k.out("param_bf16", {R, C}, DType::bf16)
                .cpu_dtype(DType::bf16)
                .accumulated()
                .fill(bf16_to_float(0xFFFF))
                .offset(c.offset)
                .exact();
          k.run = [steps, variant](OpArgs& a) {
            DeviceBuffer scalars;  // the GPU's coefficient and step scalars
            if (a.device == Device::cuda) scalars = DeviceBuffer(64);
            for (int step = 1; step <= steps; ++step) {
              AdamWHyper h{3e-2f * (1.0f - 0.1f * step), 0.9f, 0.95f, 1e-8f, 0.1f, step + 2};
              h.grad_scale = step % 2 ? 1.0f : 0.7f;
              AdamWHyper hd = h;
              if (variant & 1) {  // the clip coefficient from device memory, times grad_scale
                const float coef = 0.3f + 0.1f * step;
                if (a.device == Device::cuda) {
                  copy_to_device(scalars.data(), &coef, sizeof coef);
                  hd.grad_scale_device = scalars.as<float>();
                } else {
                  hd.grad_scale = h.grad_scale * coef;  // the kernel's fp32 product
                }
              }
              if ((variant & 2) && a.device == Device::cuda) {  // lr, step and weight decay from device memory
                const AdamWStepScalars sc = adamw_step_scalars(h);
                auto* device_sc = reinterpret_cast<AdamWStepScalars*>(scalars.as<float>() + 4);
                copy_to_device(device_sc, &sc, sizeof sc);
                hd.step_device = device_sc;
                hd.lr = hd.weight_decay = NAN;
                hd.step = 0;
              }
              const std::string s = std::to_string(step);
              adamw_update_rows(a["param"], a["grad" + s], a["m"], a["v"], a["rows" + s], hd,
                                step == steps ? a.opt("param_bf16") : Tensor());
            }
            if (a.device == Device::cuda) cuda_synchronize();  // before the scalars are freed
          };
        }
  return cs;
}

// The sum over marked rows in double within 1e-12 of the CPU's.
std::vector<OpCase> rows_sum_squares_cases() {
  std::vector<OpCase> cs;
  for (auto [R, C] : {std::pair<int64_t, int64_t>{37, 13}, {1, 1}, {3, 0}, {300, 2816}, {1001, 67}, {5, 20000},
                      {32000, 64}}) {
    OpCase& k = cs.emplace_back("sum_squares_rows");
    k.in("x", {R, C}).uniform(-3.0f, 3.0f, 8);
    k.in("rows", {R}, DType::i32).values(random_mask(R, 9));
    k.scalar("sum", 1e-12);
    k.run = [](OpArgs& a) { a.set("sum", sum_squares_rows(a["x"], a["rows"])); };
  }
  return cs;
}

// Repeated ids; a row set by an earlier micro-batch is kept.
std::vector<OpCase> mark_rows_cases() {
  std::vector<OpCase> cs;
  for (auto [R, N] : {std::pair<int64_t, int64_t>{37, 8}, {32000, 4096}, {5, 1000}, {10, 0}}) {
    OpCase& k = cs.emplace_back("mark_rows");
    k.in("ids", {N}, DType::i32).ints(0, (int32_t)R - 1, 60);
    std::vector<int32_t> rows(R, 0);
    rows[R / 2] = 1;
    k.out("rows", {R}, DType::i32).accumulated().values(rows);
    k.run = [](OpArgs& a) { mark_rows(a["ids"], a["rows"]); };
  }
  return cs;
}

LINGUA_OP_TEST(AdamWRows, MatchesCpuBitwise, rows_update_cases())
LINGUA_OP_TEST(AdamWRows, SumSquaresRowsMatchesCpu, rows_sum_squares_cases())
LINGUA_OP_TEST(AdamWRows, MarkRowsMatchesCpu, mark_rows_cases())

// Two runs and a misaligned copy give the same bits; so does the device twin, which accumulates.
TEST(AdamWRowsCuda, SumSquaresRowsIsDeterministic) {
  LINGUA_REQUIRE_GPU();
  DeviceBuffer out(16);
  double* sq = out.as<double>();
  for (auto [R, C] : {std::pair<int64_t, int64_t>{37, 13}, {1, 1}, {3, 0}, {300, 2816}, {1001, 67}, {5, 20000},
                      {32000, 64}}) {
    const auto x = random_vector(R * C, 8, -3.0f, 3.0f);
    const auto mask = random_mask(R, 9);
    DeviceTensor a({R * C}, DType::f32), b({R * C}, DType::f32, 1), rows({R}, DType::i32);
    a.upload(x);
    b.upload(x);
    rows.upload(mask);
    const std::string what = "R " + std::to_string(R) + " C " + std::to_string(C);
    const double s = sum_squares_rows(a.view({R, C}), rows.t);
    const double again = sum_squares_rows(a.view({R, C}), rows.t);
    EXPECT_EQ(0, std::memcmp(&s, &again, sizeof s)) << "two runs differ, " << what;
    const double misaligned = sum_squares_rows(b.view({R, C}), rows.t);
    EXPECT_EQ(0, std::memcmp(&s, &misaligned, sizeof s)) << "alignment changes the sum, " << what;
    // The device twin: the same value; accumulate adds to what is there.
    sum_squares_rows_device(a.view({R, C}), rows.t, sq, false);
    double d;
    copy_to_host(&d, sq, sizeof d);
    EXPECT_EQ(0, std::memcmp(&s, &d, sizeof s)) << what;
    sum_squares_rows_device(b.view({R, C}), rows.t, sq, true);
    copy_to_host(&d, sq, sizeof d);
    EXPECT_EQ(d, s + s) << what;
    const double whole = sum_squares(a.t);  // then a dense sum, then the rows again on top
    sum_squares_device(a.t, sq, false);
    sum_squares_rows_device(a.view({R, C}), rows.t, sq, true);
    copy_to_host(&d, sq, sizeof d);
    EXPECT_EQ(d, whole + s) << what;
    // no row marked: exactly 0 (also with accumulate=false over an old value)
    rows.upload(std::vector<int32_t>(R, 0));
    sum_squares_rows_device(a.view({R, C}), rows.t, sq, false);
    copy_to_host(&d, sq, sizeof d);
    EXPECT_EQ(d, 0.0) << what;
  }
}

// On the GPU, ids outside [0, R) are skipped silently (the host validates them).
TEST(AdamWRowsCuda, MarkRowsSkipsOutOfRangeIds) {
  LINGUA_REQUIRE_GPU();
  const int64_t R = 37;
  const std::vector<int32_t> ids = {3, -1, 37, 1000000, 4, 3};
  DeviceTensor dids({6}, DType::i32), drows({R}, DType::i32);
  dids.upload(ids);
  drows.upload(std::vector<int32_t>(R, 0));
  mark_rows(dids.t, drows.t);
  std::vector<int32_t> want(R, 0);
  want[3] = want[4] = 1;
  EXPECT_EQ(drows.download_i32(), want);
}

// mark_rows, sum_squares_rows_device, clip_coefficient_device and adamw_update_rows (coefficient
// and step scalars from device memory) captured once and replayed for 3 steps with new ids,
// gradients and scalars: bitwise the same as 3 eager steps with by-value hyper-parameters.
TEST(AdamWRowsCuda, CapturedRowStepReplaysBitwise) {
  LINGUA_REQUIRE_GPU();
  const int steps = 3;
  const int64_t R = 300, C = 2816, n = R * C, N = 64;
  const auto p = random_vector(n, 70);
  const std::vector<float> zeros(n, 0.0f);
  DeviceTensor pe({n}, DType::f32), me({n}, DType::f32), ve({n}, DType::f32), be({n}, DType::bf16);
  DeviceTensor pq({n}, DType::f32), mq({n}, DType::f32), vq({n}, DType::f32), bq({n}, DType::bf16);
  DeviceTensor g({n}, DType::f32), ids({N}, DType::i32), rows({R}, DType::i32);
  pe.upload(p), pq.upload(p);
  for (DeviceTensor* d : {&me, &ve, &mq, &vq}) d->upload(zeros);
  be.poison(), bq.poison();
  DeviceBuffer se(256), sg(256);  // sq, norm, coef, step scalars per run
  auto sq = [](DeviceBuffer& b) { return b.as<double>(); };
  auto norm = [](DeviceBuffer& b) { return b.as<double>() + 1; };
  auto coef = [](DeviceBuffer& b) { return reinterpret_cast<float*>(b.as<double>() + 2); };
  auto step_scalars = [](DeviceBuffer& b) { return reinterpret_cast<AdamWStepScalars*>(b.as<double>() + 4); };
  auto hyper = [](int step) { return AdamWHyper{lr_at(step), 0.9f, 0.95f, 1e-8f, 0.1f, step}; };
  const double max_norm = 1.0;  // below the gradient norm of the touched rows: clipping is active
  auto optimizer_step = [&](DeviceBuffer& s, DeviceTensor& pp, DeviceTensor& mm, DeviceTensor& vv, DeviceTensor& bb,
                            const AdamWHyper& h) {
    cuda_memset_zero(rows.t.data, R * 4);
    mark_rows(ids.t, rows.t);
    sum_squares_rows_device(g.view({R, C}), rows.t, sq(s), false);
    clip_coefficient_device(sq(s), max_norm, coef(s), norm(s));
    AdamWHyper hh = h;
    hh.grad_scale_device = coef(s);
    adamw_update_rows(pp.view({R, C}), g.view({R, C}), mm.view({R, C}), vv.view({R, C}), rows.t, hh, bb.view({R, C}));
  };
  auto inputs = [&](int step) {
    g.upload(random_vector(n, 80 + step, -1.0f, 1.0f));
    ids.upload(random_ints(N, 90 + step, 0, (int32_t)R - 1));
  };
  std::vector<double> eager_norms;
  for (int step = 1; step <= steps; ++step) {  // eager; also sizes the sum-of-squares scratch
    inputs(step);
    optimizer_step(se, pe, me, ve, be, hyper(step));
    double nrm;
    copy_to_host(&nrm, norm(se), sizeof nrm);
    eager_norms.push_back(nrm);
  }
  float c;
  copy_to_host(&c, coef(se), sizeof c);
  EXPECT_LT(c, 1.0f);

  CudaGraph graph;
  graph.begin_capture();
  AdamWHyper hd = hyper(1);
  hd.lr = NAN;
  hd.step = 0;
  hd.step_device = step_scalars(sg);
  optimizer_step(sg, pq, mq, vq, bq, hd);
  graph.end_capture();
  ASSERT_TRUE(graph.ready());

  PinnedBuffer slots(steps * sizeof(AdamWStepScalars));
  for (int step = 1; step <= steps; ++step) {
    inputs(step);
    AdamWStepScalars* slot = slots.as<AdamWStepScalars>() + (step - 1);
    *slot = adamw_step_scalars(hyper(step));
    copy_to_device_async(step_scalars(sg), slot, sizeof *slot);
    graph.launch();
    double nrm;
    copy_to_host(&nrm, norm(sg), sizeof nrm);
    EXPECT_EQ(0, std::memcmp(&nrm, &eager_norms[step - 1], sizeof nrm)) << "step " << step;
  }
  EXPECT_TRUE(same_bits(pq.download(), pe.download(), "param"));
  EXPECT_TRUE(same_bits(mq.download(), me.download(), "m"));
  EXPECT_TRUE(same_bits(vq.download(), ve.download(), "v"));
  EXPECT_EQ(bq.bytes(), be.bytes());
}

TEST(AdamWRowsCuda, Errors) {
  LINGUA_REQUIRE_GPU();
  const int64_t R = 4, C = 3;
  DeviceTensor p({R * C}, DType::f32), g({R * C}, DType::f32), m({R * C}, DType::f32), v({R * C}, DType::f32);
  DeviceTensor rows({R}, DType::i32), rows5({R + 1}, DType::i32), rowsf({R}, DType::f32), pb({R * C}, DType::bf16);
  rows.upload(std::vector<int32_t>(R, 1));
  AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
  EXPECT_NO_THROW(
      adamw_update_rows(p.view({R, C}), g.view({R, C}), m.view({R, C}), v.view({R, C}), rows.t, h, pb.view({R, C})));
  EXPECT_THROW(adamw_update_rows(p.t, g.t, m.t, v.t, rows.t, h), Error);  // 1-D
  EXPECT_THROW(adamw_update_rows(p.view({R, C}), g.view({C, R}), m.view({R, C}), v.view({R, C}), rows.t, h), Error);
  EXPECT_THROW(adamw_update_rows(p.view({R, C}), g.view({R, C}), m.view({R, C}), v.view({R, C}), rows5.t, h), Error);
  EXPECT_THROW(adamw_update_rows(p.view({R, C}), g.view({R, C}), m.view({R, C}), v.view({R, C}), rowsf.t, h), Error);
  EXPECT_THROW(adamw_update_rows(p.view({R, C}), g.view({R, C}), m.view({R, C}), v.view({R, C}), rows.t, h, pb.t),
               Error);
  std::vector<int32_t> host_rows(R, 1);
  EXPECT_THROW(adamw_update_rows(p.view({R, C}), g.view({R, C}), m.view({R, C}), v.view({R, C}),
                                 Tensor(host_rows.data(), {R}), h),
               Error);  // rows on the CPU
  h.step = 0;
  EXPECT_THROW(adamw_update_rows(p.view({R, C}), g.view({R, C}), m.view({R, C}), v.view({R, C}), rows.t, h), Error);
  EXPECT_THROW(sum_squares_rows(p.t, rows.t), Error);
  EXPECT_THROW(sum_squares_rows(p.view({R, C}), rows5.t), Error);
  EXPECT_THROW(sum_squares_rows_device(p.view({R, C}), rows.t, nullptr, false), Error);
  EXPECT_THROW(mark_rows(rowsf.t, rows.t), Error);                       // ids f32
  EXPECT_THROW(mark_rows(rows.t, Tensor(host_rows.data(), {R})), Error);  // rows on the CPU
  cuda_synchronize();
}

TEST(AdamWCuda, Errors) {
  LINGUA_REQUIRE_GPU();
  DeviceTensor p({5}, DType::f32), g({5}, DType::f32), m({5}, DType::f32), v({4}, DType::f32), gb({5}, DType::bf16),
      pb({5}, DType::bf16);
  DeviceTensor pf({5}, DType::f32), pb6({6}, DType::bf16);
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
