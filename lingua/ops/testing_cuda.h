#pragma once
// Helpers shared by the GPU op tests and the op-test harness (backend_test.h): tensors in memory
// they own (on the GPU, or on the host for the harness's CPU pass), filled from and read back to
// host vectors, and the comparisons the tests make. Plain C++ (no CUDA headers).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"

namespace lingua::test_util {

// For a GPU-only test: skips it on machines without a GPU.
#define LINGUA_REQUIRE_GPU() \
  if (::lingua::cuda_device_count() == 0) GTEST_SKIP() << "no GPU"

// The values a tensor of dtype dt holds for v (bf16 rounds to nearest even).
inline std::vector<float> as_dtype(std::vector<float> v, DType dt) {
  if (dt == DType::bf16)
    for (float& x : v) x = round_to_bf16(x);
  return v;
}

// A view of `dims` (at most kMaxDims) over p.
inline Tensor tensor_view(void* p, const std::vector<int64_t>& dims, DType dt, Device dev) {
  Tensor t(p, {}, dt, dev);
  LINGUA_CHECK(dims.size() <= (size_t)kMaxDims, "tensor_view: too many dims");
  for (int64_t d : dims) t.shape[t.ndim++] = d;
  return t;
}

// A tensor of `dims` and dtype f32, bf16 or i32 in memory it owns, `offset` elements into that
// memory (to misalign it). On the GPU unless dev is Device::cpu (host memory, for the harness's
// CPU pass). Movable, not copyable; t stays valid when moved (the memory does not move).
struct DeviceTensor {
  DeviceBuffer buf;           // the memory when on the GPU
  std::vector<uint8_t> host;  // the memory when on the host
  Tensor t;
  DeviceTensor(std::initializer_list<int64_t> dims, DType dt, int64_t offset = 0, Device dev = Device::cuda)
      : DeviceTensor(std::vector<int64_t>(dims), dt, offset, dev) {}
  DeviceTensor(const std::vector<int64_t>& dims, DType dt, int64_t offset = 0, Device dev = Device::cuda)
      : t(tensor_view(nullptr, dims, dt, dev)) {
    const size_t bytes = (t.numel() + offset) * dtype_size(dt) + 16;
    void* base;
    if (dev == Device::cuda) {
      buf = DeviceBuffer(bytes);
      base = buf.data();
    } else {
      host.resize(bytes);
      base = host.data();
    }
    t.data = static_cast<char*>(base) + offset * dtype_size(dt);
  }
  // Raw bytes in and out of the tensor's memory (synchronous for the GPU).
  void write(const void* src, size_t bytes) {
    if (bytes == 0) return;
    if (t.device == Device::cuda)
      copy_to_device(t.data, src, bytes);
    else
      std::memcpy(t.data, src, bytes);
  }
  void read(void* dst, size_t bytes) const {
    if (bytes == 0) return;
    if (t.device == Device::cuda)
      copy_to_host(dst, t.data, bytes);
    else
      std::memcpy(dst, t.data, bytes);
  }
  // f32 or bf16 tensors: v converted to the dtype (bf16 rounds to nearest even).
  void upload(const std::vector<float>& v) {
    ASSERT_EQ((int64_t)v.size(), t.numel());
    ASSERT_NE(t.dtype, DType::i32);
    if (t.dtype == DType::bf16) {
      const auto h = to_bf16(v);
      write(h.data(), h.size() * 2);
    } else {
      write(v.data(), v.size() * 4);
    }
  }
  void upload(const std::vector<int32_t>& v) {
    ASSERT_EQ((int64_t)v.size(), t.numel());
    ASSERT_EQ(t.dtype, DType::i32);
    write(v.data(), v.size() * 4);
  }
  std::vector<float> download() const {  // f32 or bf16 tensors
    EXPECT_NE(t.dtype, DType::i32);
    std::vector<float> v(t.numel());
    if (t.dtype == DType::bf16) {
      std::vector<uint16_t> h(v.size());
      read(h.data(), h.size() * 2);
      v = from_bf16(h);
    } else {
      read(v.data(), v.size() * 4);
    }
    return v;
  }
  std::vector<int32_t> download_i32() const {
    EXPECT_EQ(t.dtype, DType::i32);
    std::vector<int32_t> v(t.numel());
    read(v.data(), v.size() * 4);
    return v;
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> b(t.nbytes());
    read(b.data(), b.size());
    return b;
  }
  void poison() {  // all-ones bytes: NaN in f32 and bf16
    std::vector<uint8_t> p(t.nbytes(), 0xFF);
    write(p.data(), p.size());
  }
  void zero() {  // on the GPU: queued on the stream
    if (t.device == Device::cuda)
      cuda_memset_zero(t.data, t.nbytes());
    else
      std::memset(t.data, 0, t.nbytes());
  }
  // The same memory seen with other dims and dtype (e.g. to pass an op a wrong dtype or shape).
  Tensor view(std::initializer_list<int64_t> dims, DType dt) const { return Tensor(t.data, dims, dt, t.device); }
  Tensor view(std::initializer_list<int64_t> dims) const { return view(dims, t.dtype); }
};

// All-ones bytes over a whole buffer that holds no tensor (e.g. a device double).
inline void poison(const DeviceBuffer& b) {
  std::vector<uint8_t> p(b.bytes(), 0xFF);
  if (!p.empty()) copy_to_device(b.data(), p.data(), p.size());
}

// One double in device memory, read back.
inline double read_device_double(const double* device) {
  double v;
  copy_to_host(&v, device, sizeof v);
  return v;
}

// ||out - ref|| / ||ref||; NaN (so any comparison fails) when out holds a NaN.
inline double rel_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double d = 0, r = 0;
  for (size_t i = 0; i < ref.size() && i < out.size(); ++i) {
    if (std::isnan(out[i])) return NAN;
    d += ((double)out[i] - ref[i]) * ((double)out[i] - ref[i]);
    r += (double)ref[i] * ref[i];
  }
  return std::sqrt(d / std::max(r, 1e-300));
}

// Bitwise equality (NaN-safe): names the first difference and how many elements differ.
template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << what << ": " << got.size() << " elements, expected " << want.size();
  size_t first = got.size(), count = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      if (!count++) first = i;
    }
  if (!count) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << count << " of " << got.size()
                                       << " elements differ, the first at " << first << ": " << got[first]
                                       << " vs " << want[first];
}

inline ::testing::AssertionResult same_bits(double got, double want, const std::string& what = "value") {
  if (std::memcmp(&got, &want, sizeof got) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << std::hexfloat << got << " vs " << want;
}

}  // namespace lingua::test_util
