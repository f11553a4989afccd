#pragma once
// Arena: one allocation sized once before training, in host or device memory; a step takes
// slices from it and releases them all at once with reset(). Exceeding the capacity is an
// internal error (the size formula is wrong).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/error.h"
#include "lingua/core/tensor.h"

namespace lingua {

class Arena {
 public:
  explicit Arena(Device device = Device::cpu) : device_(device) {}
  // Capacity in floats (4-byte units); drops what was allocated.
  void reserve(size_t floats) {
    if (device_ == Device::cuda) {
      dev_ = DeviceBuffer(floats * sizeof(float));
      base_ = dev_.as<float>();
    } else {
      host_.assign(floats, 0.0f);
      base_ = host_.data();
    }
    cap_ = floats;
    used_ = high_ = 0;
  }
  // n floats (or 4n bytes of any dtype), 64-byte aligned.
  float* alloc(size_t n) {
    n = (n + 15) & ~size_t(15);
    LINGUA_CHECK(used_ + n <= cap_, "internal error: activation arena exhausted (capacity ", cap_,
                 " floats, need ", used_ + n, ")");
    float* p = base_ + used_;
    used_ += n;
    if (used_ > high_) high_ = used_;
    return p;
  }
  Device device() const { return device_; }
  size_t mark() const { return used_; }
  void release_to(size_t m) { used_ = m; }
  void reset() { used_ = 0; }
  size_t capacity() const { return cap_; }
  size_t high_water() const { return high_; }

 private:
  Device device_;
  std::vector<float> host_;
  DeviceBuffer dev_;
  float* base_ = nullptr;
  size_t cap_ = 0, used_ = 0, high_ = 0;
};

}  // namespace lingua
