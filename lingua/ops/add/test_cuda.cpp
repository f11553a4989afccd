// GPU residual add: one fp32 add per element, so the results equal the host's bit for bit.
#include <gtest/gtest.h>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/add/add.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU"

template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  if (!v.empty()) copy_to_device(b.data(), v.data(), b.bytes());
  return b;
}
std::vector<float> download(const DeviceBuffer& b) {
  std::vector<float> h(b.bytes() / 4);
  if (!h.empty()) copy_to_host(h.data(), b.data(), b.bytes());
  return h;
}

// Sizes around the 4- and 8-element vectors, and large ones (grid-stride loops).
const int64_t kSizes[] = {1, 3, 4, 7, 8, 9, 15, 17, 1000, 4097, (int64_t(1) << 20) + 3, int64_t(1) << 22};

TEST(AddCuda, F32MatchesHostExactly) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : kSizes)
    for (int64_t offset : {0, 1}) {  // offset 1: misaligned pointers, the scalar path
      const int64_t total = n + offset;
      auto dst = random_vector(total, 1);
      auto src = random_vector(total, 2);
      DeviceBuffer d = upload(dst), s = upload(src);
      add_into(Tensor(d.as<float>() + offset, {n}, DType::f32, Device::cuda),
               Tensor(s.as<float>() + offset, {n}, DType::f32, Device::cuda));
      for (int64_t i = offset; i < total; ++i) dst[i] += src[i];
      EXPECT_EQ(download(d), dst) << "n " << n << " offset " << offset;
    }
}

TEST(AddCuda, Bf16MatchesHostExactly) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : kSizes)
    for (int64_t offset : {0, 1, 8}) {  // 8: dst 32 bytes, src 16 bytes in: still vectorised
      const int64_t total = n + offset;
      auto dst = random_vector(total, 3);
      auto src = to_bf16(random_vector(total, 4, -4.0f, 4.0f));
      DeviceBuffer d = upload(dst), s = upload(src);
      add_into(Tensor(d.as<float>() + offset, {n}, DType::f32, Device::cuda),
               Tensor(s.as<uint16_t>() + offset, {n}, DType::bf16, Device::cuda));
      for (int64_t i = offset; i < total; ++i) dst[i] += bf16_to_float(src[i]);
      EXPECT_EQ(download(d), dst) << "n " << n << " offset " << offset;
    }
}

TEST(AddCuda, ShapesMayDifferWithTheSameNumel) {
  SKIP_WITHOUT_GPU();
  auto dst = random_vector(24, 5);
  auto src = random_vector(24, 6);
  DeviceBuffer d = upload(dst), s = upload(src);
  add_into(Tensor(d.data(), {4, 6}, DType::f32, Device::cuda), Tensor(s.data(), {2, 3, 4}, DType::f32, Device::cuda));
  for (int i = 0; i < 24; ++i) dst[i] += src[i];
  EXPECT_EQ(download(d), dst);
  add_into(Tensor(d.data(), {0}, DType::f32, Device::cuda), Tensor(s.data(), {0, 3}, DType::f32, Device::cuda));
  EXPECT_EQ(download(d), dst);
}

TEST(AddCuda, Errors) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer d(64 * 4), s(64 * 4);
  std::vector<float> host(64);
  const Tensor D(d.data(), {64}, DType::f32, Device::cuda);
  EXPECT_THROW(add_into(D, Tensor(s.data(), {63}, DType::f32, Device::cuda)), Error);
  EXPECT_THROW(add_into(Tensor(d.data(), {64}, DType::bf16, Device::cuda), Tensor(s.data(), {64}, DType::bf16,
                                                                                   Device::cuda)),
               Error);
  EXPECT_THROW(add_into(D, Tensor(s.data(), {64}, DType::i32, Device::cuda)), Error);
  EXPECT_THROW(add_into(D, Tensor(host.data(), {64})), Error);
  EXPECT_THROW(add_into(Tensor(host.data(), {64}), Tensor(s.data(), {64}, DType::f32, Device::cuda)), Error);
}

}  // namespace
