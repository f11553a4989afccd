#pragma once
// Helpers shared by the GPU op tests (test_cuda.cpp): device tensors filled from and read back to
// host float vectors in f32 or bf16, and the comparisons the tests make. Plain C++ (no CUDA
// headers).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"

namespace lingua::test_util {

// The values a tensor of dtype dt holds for v (bf16 rounds to nearest even).
inline std::vector<float> as_dtype(std::vector<float> v, DType dt) {
  if (dt == DType::bf16)
    for (float& x : v) x = round_to_bf16(x);
  return v;
}

// A GPU tensor of `dims` and dtype f32, bf16 or i32, `offset` elements into its own buffer (to
// misalign it).
struct DeviceTensor {
  DeviceBuffer buf;
  Tensor t;
  DeviceTensor(std::initializer_list<int64_t> dims, DType dt, int64_t offset = 0) : t(nullptr, dims, dt, Device::cuda) {
    buf = DeviceBuffer((t.numel() + offset) * dtype_size(dt) + 16);
    t.data = static_cast<char*>(buf.data()) + offset * dtype_size(dt);
  }
  void upload(const std::vector<float>& v) {
    ASSERT_EQ((int64_t)v.size(), t.numel());
    if (t.dtype == DType::bf16) {
      auto h = to_bf16(v);
      copy_to_device(t.data, h.data(), h.size() * 2);
    } else {
      copy_to_device(t.data, v.data(), v.size() * 4);
    }
  }
  void upload(const std::vector<int32_t>& v) {
    ASSERT_EQ((int64_t)v.size(), t.numel());
    copy_to_device(t.data, v.data(), v.size() * 4);
  }
  std::vector<float> download() const {
    std::vector<float> v(t.numel());
    if (t.dtype == DType::bf16) {
      std::vector<uint16_t> h(v.size());
      copy_to_host(h.data(), t.data, h.size() * 2);
      v = from_bf16(h);
    } else {
      copy_to_host(v.data(), t.data, v.size() * 4);
    }
    return v;
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> b(t.nbytes());
    copy_to_host(b.data(), t.data, b.size());
    return b;
  }
  void poison() {  // all-ones bytes: NaN in f32 and bf16
    std::vector<uint8_t> p(t.nbytes(), 0xFF);
    copy_to_device(t.data, p.data(), p.size());
  }
  void zero() { cuda_memset_zero(t.data, t.nbytes()); }  // queued on the stream
  // The same memory seen with other dims and dtype (e.g. to pass an op a wrong dtype or shape).
  Tensor view(std::initializer_list<int64_t> dims, DType dt) const { return Tensor(t.data, dims, dt, Device::cuda); }
};

// All-ones bytes over a whole buffer that holds no tensor (e.g. a device double).
inline void poison(const DeviceBuffer& b) {
  std::vector<uint8_t> p(b.bytes(), 0xFF);
  if (!p.empty()) copy_to_device(b.data(), p.data(), p.size());
}

// ||out - ref|| / ||ref||; NaN (so any comparison fails) when out holds a NaN.
inline double rel_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double d = 0, r = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i])) return NAN;
    d += ((double)out[i] - ref[i]) * ((double)out[i] - ref[i]);
    r += (double)ref[i] * ref[i];
  }
  return std::sqrt(d / std::max(r, 1e-300));
}

}  // namespace lingua::test_util
