// RoPE on CUDA against the fp32 CPU reference (the op-test harness), and the table upload.
#include <gtest/gtest.h>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/rope/rope.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

constexpr double kTheta = 10000.0;

struct Case {
  int64_t B, T, H, hd;
};

// x rotated in place; f32: the same fp32 operations on the same table values, expected exact
// (max error 1e-6).
std::vector<OpCase> cases() {
  std::vector<OpCase> cs;
  const Case shapes[] = {{1, 1, 1, 2}, {2, 31, 3, 10}, {2, 17, 5, 6}, {1, 33, 4, 64}, {3, 257, 2, 128}, {2, 33, 7, 8}};
  for (Case c : shapes)
    for (DType dt : {DType::f32, DType::bf16})
      for (int pos0 : {0, 7})
        for (int prefix : {0, 5})  // prefix rows of each sequence are left as they are
          for (bool backward : {false, true})
            for (int64_t offset : {0, 1}) {  // offset 1: misaligned, the pair-at-a-time path
            if ((offset && c.hd % 8) || prefix > c.T || (prefix && pos0)) continue;
            OpCase& k = cs.emplace_back(backward ? "rope_backward" : "rope_forward",
                                        "pos0 " + std::to_string(pos0) + " prefix " + std::to_string(prefix));
            Tol tol;
            tol.rel_l2 = dtype_tol(dt);
            if (dt == DType::f32) tol.max_abs = 1e-6;
            k.out("x", {c.B, c.T, c.H, c.hd}, dt).accumulated().uniform(-1.0f, 1.0f, 1).offset(offset).tol(tol);
            k.run = [table = rope_table((int)(c.T + 7), (int)c.hd, kTheta), pos0, prefix, backward](OpArgs& a) {
              backward ? rope_backward(a["x"], table, pos0, prefix) : rope_forward(a["x"], table, pos0, prefix);
            };
            }
  return cs;
}

LINGUA_OP_TEST(Rope, ForwardAndBackwardMatchCpu, cases())

TEST(RopeCuda, BackwardInvertsForwardAndTableIsUploadedOnce) {
  LINGUA_REQUIRE_GPU();
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
  LINGUA_REQUIRE_GPU();
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
