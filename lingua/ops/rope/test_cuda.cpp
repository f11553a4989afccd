// RoPE on CUDA against the fp32 CPU reference run on the same (bf16-rounded) inputs.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/rope/rope.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

constexpr double kTheta = 10000.0;

struct Case {
  int64_t B, T, H, hd;
};

TEST(RopeCuda, ForwardAndBackwardMatchCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Case cases[] = {{1, 1, 1, 2}, {2, 31, 3, 10}, {2, 17, 5, 6}, {1, 33, 4, 64}, {3, 257, 2, 128}, {2, 33, 7, 8}};
  for (Case c : cases)
    for (DType dt : {DType::f32, DType::bf16})
      for (int pos0 : {0, 7})
        for (bool backward : {false, true})
          for (int64_t offset : {0, 1}) {  // offset 1: misaligned, the pair-at-a-time path
            if (offset && c.hd % 8) continue;
            auto table = rope_table((int)(c.T + 7), (int)c.hd, kTheta);
            const int64_t n = c.B * c.T * c.H * c.hd;
            auto x = as_dtype(random_vector(n, 1), dt);
            auto ref = x;
            Tensor host(ref.data(), {c.B, c.T, c.H, c.hd});
            backward ? rope_backward(host, table, pos0) : rope_forward(host, table, pos0);
            DeviceTensor d({c.B, c.T, c.H, c.hd}, dt, offset);
            d.upload(x);
            backward ? rope_backward(d.t, table, pos0) : rope_forward(d.t, table, pos0);
            const double tol = dt == DType::bf16 ? 1e-2 : 1e-5;
            const auto out = d.download();
            EXPECT_LT(rel_l2(out, ref), tol) << c.B << "x" << c.T << "x" << c.H << "x" << c.hd << " " << dtype_name(dt)
                                             << " pos0 " << pos0 << " backward " << backward << " offset " << offset;
            if (dt == DType::f32) {
              // Same fp32 operations on the same table values: expected to be exact.
              double worst = 0;
              for (int64_t i = 0; i < n; ++i) worst = std::max(worst, (double)std::fabs(out[i] - ref[i]));
              EXPECT_LE(worst, 1e-6) << c.hd << " pos0 " << pos0;
            }
          }
}

TEST(RopeCuda, BackwardInvertsForwardAndTableIsUploadedOnce) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Case c{2, 65, 4, 64};
  auto table = rope_table(80, (int)c.hd, kTheta);
  EXPECT_FALSE(table.device);
  auto x = random_vector(c.B * c.T * c.H * c.hd, 2);
  DeviceTensor d({c.B, c.T, c.H, c.hd}, DType::f32);
  d.upload(x);
  rope_forward(d.t, table, 9);
  ASSERT_TRUE(table.device);
  const void* uploaded = table.device->data();
  RopeTable copy = table;  // shares the device copy
  rope_backward(d.t, copy, 9);
  EXPECT_EQ(copy.device->data(), uploaded);
  EXPECT_EQ(table.device->data(), uploaded);
  EXPECT_LT(rel_l2(d.download(), x), 1e-6);
}

TEST(RopeCuda, Errors) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  auto table = rope_table(16, 6, kTheta);
  DeviceTensor x({2, 8, 3, 10}, DType::f32), y({2, 8, 5, 6}, DType::bf16), z({2, 8, 5, 6}, DType::i32);
  EXPECT_THROW(rope_forward(x.t, table), Error);                 // hd differs from the table
  EXPECT_THROW(rope_forward(y.t, table, 9), Error);              // positions 9..16 > max_pos
  EXPECT_NO_THROW(rope_forward(y.t, table, 8));
  EXPECT_THROW(rope_forward(z.t, table), Error);                 // i32
  EXPECT_THROW(rope_backward(Tensor(y.t.data, {16, 30}, DType::bf16, Device::cuda), table), Error);  // 2-D
  std::vector<float> host(2 * 8 * 5 * 6);
  EXPECT_NO_THROW(rope_forward(Tensor(host.data(), {2, 8, 5, 6}), table));  // CPU tensors still go to the CPU
  cuda_synchronize();
}

}  // namespace
