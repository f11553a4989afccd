// The strided copies of cuda.h (copy_columns) on the host and, where a GPU is present, on CUDA,
// against a plain loop, at odd sizes and for f32 and bf16 rows.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/error.h"

using namespace lingua;

namespace {

// dst[r, dc + c] = src[r, sc + c] on `dev` (elements of dt); returns dst's bytes.
std::vector<uint8_t> run_copy_columns(Device dev, DType dt, int64_t rows, int64_t dst_w, int64_t dc,
                                      const std::vector<uint8_t>& src_h, int64_t src_w, int64_t sc, int64_t cols,
                                      std::vector<uint8_t> dst_h) {
  if (dev == Device::cpu) {
    copy_columns(Tensor(dst_h.data(), {rows, dst_w}, dt), dc, Tensor((void*)src_h.data(), {rows, src_w}, dt), sc, cols);
    return dst_h;
  }
  DeviceBuffer s(src_h.size()), d(dst_h.size());
  copy_to_device(s.data(), src_h.data(), src_h.size());
  copy_to_device(d.data(), dst_h.data(), dst_h.size());
  copy_columns(Tensor(d.data(), {rows, dst_w}, dt, Device::cuda), dc, Tensor(s.data(), {rows, src_w}, dt, Device::cuda),
               sc, cols);
  cuda_synchronize();
  copy_to_host(dst_h.data(), d.data(), dst_h.size());
  return dst_h;
}

}  // namespace

TEST(CopyColumns, MatchesALoopOnEveryDevice) {
  std::vector<Device> devs{Device::cpu};
  if (cuda_device_count() > 0) devs.push_back(Device::cuda);
  for (Device dev : devs)
    for (DType dt : {DType::f32, DType::bf16})
      for (int64_t rows : {1, 7}) {
        SCOPED_TRACE(std::string(device_name(dev)) + " " + dtype_name(dt) + " rows " + std::to_string(rows));
        const int64_t src_w = 13, dst_w = 11, sc = 4, dc = 3, cols = 5;
        const size_t e = dtype_size(dt);
        std::vector<uint8_t> src((size_t)(rows * src_w) * e), dst((size_t)(rows * dst_w) * e);
        for (size_t i = 0; i < src.size(); ++i) src[i] = (uint8_t)(37 * i + 11);
        for (size_t i = 0; i < dst.size(); ++i) dst[i] = (uint8_t)(101 * i + 3);
        std::vector<uint8_t> want = dst;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            for (size_t b = 0; b < e; ++b)
              want[(size_t)(r * dst_w + dc + c) * e + b] = src[(size_t)(r * src_w + sc + c) * e + b];
        EXPECT_EQ(run_copy_columns(dev, dt, rows, dst_w, dc, src, src_w, sc, cols, dst), want);
      }
}

TEST(CopyColumns, RefusesColumnsOutOfRange) {
  std::vector<float> a(12), b(12);
  EXPECT_THROW(copy_columns(Tensor(a.data(), {3, 4}), 2, Tensor(b.data(), {3, 4}), 0, 3), Error);
  EXPECT_THROW(copy_columns(Tensor(a.data(), {3, 4}), 0, Tensor(b.data(), {4, 3}), 0, 2), Error);
}
