// Skipping a step with non-finite gradients on CUDA: the guard and the updates that read its
// coefficients, against the CPU (the same tensors unchanged, or the same update bit for bit), and
// captured in a CUDA graph.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Group {
  DeviceTensor p, g, m, v, bf;
  Group(int64_t n, Device dev)
      : p({n}, DType::f32, 0, dev), g({n}, DType::f32, 0, dev), m({n}, DType::f32, 0, dev),
        v({n}, DType::f32, 0, dev), bf({n}, DType::bf16, 0, dev) {}
};

// Norms, clip coefficients, the guard and the updates of two groups on `dev`; returns the groups'
// parameters, moments and bf16 copies after the step, and whether the coefficients became NaN.
struct StepOut {
  std::vector<std::vector<float>> tensors;
  std::vector<std::vector<uint8_t>> bf16;
  bool skipped;
};

StepOut guarded_step(Device dev, float bad, bool capture) {
  const int64_t n[2] = {37, 4099};
  std::vector<Group> groups;
  for (int i = 0; i < 2; ++i) {
    groups.emplace_back(n[i], dev);
    Group& gr = groups.back();
    auto g = random_vector(n[i], 70 + i);
    if (i == 1) g[1234] = bad;
    gr.g.upload(g);
    gr.p.upload(random_vector(n[i], 80 + i));
    gr.m.upload(std::vector<float>(n[i], 0.1f));
    gr.v.upload(std::vector<float>(n[i], 0.2f));
    gr.bf.write(std::vector<uint16_t>(n[i], 7).data(), n[i] * 2);
  }
  // sq (double), norm (double), coef (float) per group, in the tensors' memory.
  DeviceTensor stats({2 * 6}, DType::f32, 0, dev);
  auto sq = [&](int i) { return reinterpret_cast<double*>(stats.t.data) + 3 * i; };
  auto coef = [&](int i) { return reinterpret_cast<float*>(sq(i) + 2); };
  auto body = [&] {
    for (int i = 0; i < 2; ++i) {
      sum_squares_device(groups[i].g.t, sq(i), false);
      clip_coefficient_device(dev, sq(i), 1.0, coef(i), sq(i) + 1);
    }
    const double* sqs[2] = {sq(0), sq(1)};
    float* coefs[2] = {coef(0), coef(1)};
    skip_step_if_nonfinite_device(dev, sqs, coefs, 2);
    for (int i = 0; i < 2; ++i) {
      AdamWHyper h{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3};
      h.grad_scale_device = coef(i);
      adamw_update(groups[i].p.t, groups[i].g.t, groups[i].m.t, groups[i].v.t, h, groups[i].bf.t);
    }
  };
  if (capture) {
    body();  // sizes the sum scratch before the capture; then restore the inputs and replay
    CudaGraph graph;
    for (int i = 0; i < 2; ++i) {
      groups[i].p.upload(random_vector(n[i], 80 + i));
      groups[i].m.upload(std::vector<float>(n[i], 0.1f));
      groups[i].v.upload(std::vector<float>(n[i], 0.2f));
      groups[i].bf.write(std::vector<uint16_t>(n[i], 7).data(), n[i] * 2);
    }
    graph.begin_capture();
    body();
    graph.end_capture();
    graph.launch();
  } else {
    body();
  }
  StepOut out;
  float c[2];
  for (int i = 0; i < 2; ++i) {
    stats.t.device == Device::cuda ? copy_to_host(&c[i], coef(i), sizeof(float)) : (void)(c[i] = *coef(i));
    out.tensors.push_back(groups[i].p.download());
    out.tensors.push_back(groups[i].m.download());
    out.tensors.push_back(groups[i].v.download());
    out.bf16.push_back(groups[i].bf.bytes());
  }
  EXPECT_EQ(std::isnan(c[0]), std::isnan(c[1]));
  out.skipped = std::isnan(c[0]);
  return out;
}

}  // namespace

TEST(AdamWCuda, NonFiniteGradientSkipsTheStepLikeTheCpu) {
  LINGUA_REQUIRE_GPU();
  for (bool capture : {false, true})
    for (float bad : {NAN, INFINITY, 0.25f}) {
      const StepOut cpu = guarded_step(Device::cpu, bad, false);
      const StepOut gpu = guarded_step(Device::cuda, bad, capture);
      EXPECT_EQ(cpu.skipped, !std::isfinite(bad));
      EXPECT_EQ(gpu.skipped, cpu.skipped) << bad;
      for (size_t k = 0; k < cpu.tensors.size(); ++k)
        EXPECT_TRUE(same_bits(gpu.tensors[k], cpu.tensors[k], "tensor " + std::to_string(k))) << bad << capture;
      EXPECT_EQ(gpu.bf16, cpu.bf16) << bad;
      if (!std::isfinite(bad)) {  // unchanged: the inputs again
        EXPECT_EQ(cpu.tensors[0], random_vector(37, 80));
        EXPECT_EQ(cpu.tensors[3], random_vector(4099, 81));
      }
    }
}
