#include <gtest/gtest.h>

#include <random>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/cast/cast.h"

using namespace lingua;

TEST(CastCuda, MatchesHostRoundingAtOddSizes) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  std::mt19937 g(2);
  std::normal_distribution<float> nd;
  for (int64_t n : {1, 7, 8, 9, 1000, 4099}) {
    std::vector<float> x(n);
    for (auto& v : x) v = nd(g) * 100;
    DeviceBuffer dx(n * 4), dh(n * 2), dy(n * 4);
    copy_to_device(dx.data(), x.data(), n * 4);
    std::vector<uint16_t> poison(n, 0x7FC1);
    copy_to_device(dh.data(), poison.data(), n * 2);
    cast_into(Tensor(dh.data(), {n}, DType::bf16, Device::cuda), Tensor(dx.data(), {n}, DType::f32, Device::cuda));
    cast_into(Tensor(dy.data(), {n}, DType::f32, Device::cuda), Tensor(dh.data(), {n}, DType::bf16, Device::cuda));
    std::vector<uint16_t> h(n);
    std::vector<float> y(n);
    copy_to_host(h.data(), dh.data(), n * 2);
    copy_to_host(y.data(), dy.data(), n * 4);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(h[i], float_to_bf16(x[i])) << "n=" << n << " i=" << i;
      ASSERT_EQ(y[i], bf16_to_float(h[i]));
    }
  }
}
