#pragma once
// Arena: one allocation sized once before training, in host or device memory; a step takes
// slices from it and releases them all at once with reset(). Exceeding the capacity is an
// internal error (the size formula is wrong). An arena can also be a view of part of another's
// memory (view()), so that one allocation holds several regions with their own stacks.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/error.h"
#include "lingua/core/tensor.h"

namespace lingua {

class Arena {
 public:
  static constexpr size_t kAlign = 64;  // every slice starts on a 64-byte boundary (128-bit loads)
  explicit Arena(Device device = Device::cpu) : device_(device) {}
  // A non-owning arena over [base, base + bytes) (base 64-byte aligned), e.g. a region of another.
  static Arena view(void* base, size_t bytes, Device device) {
    Arena a(device);
    a.base_ = static_cast<char*>(base);
    a.cap_ = bytes;
    return a;
  }
  // Capacity in bytes; drops what was allocated (freed first, so peak memory holds one of them).
  void reserve(size_t bytes) {
    bytes = round_up(bytes);
    base_ = nullptr;
    if (device_ == Device::cuda) {
      dev_ = DeviceBuffer();
      if (bytes) dev_ = DeviceBuffer(bytes);
      base_ = dev_.as<char>();
    } else {
      host_.clear();
      host_.shrink_to_fit();
      host_.assign(bytes / sizeof(float), 0.0f);
      base_ = reinterpret_cast<char*>(host_.data());
    }
    cap_ = bytes;
    used_ = high_ = 0;
  }
  static size_t round_up(size_t bytes) { return (bytes + kAlign - 1) & ~(kAlign - 1); }
  void* alloc(size_t bytes) {
    bytes = round_up(bytes);
    LINGUA_CHECK(used_ + bytes <= cap_, "internal error: activation arena exhausted (capacity ", cap_,
                 " bytes, need ", used_ + bytes, ")");
    char* p = base_ + used_;
    used_ += bytes;
    if (used_ > high_) high_ = used_;
    return p;
  }
  Device device() const { return device_; }
  size_t mark() const { return used_; }
  void release_to(size_t m) { used_ = m; }
  void reset() { used_ = 0; }
  size_t capacity() const { return cap_; }    // bytes
  char* base() const { return base_; }
  size_t high_water() const { return high_; }  // bytes

 private:
  Device device_;
  std::vector<float> host_;  // float storage keeps host slices aligned for f32
  DeviceBuffer dev_;
  char* base_ = nullptr;
  size_t cap_ = 0, used_ = 0, high_ = 0;
};

}  // namespace lingua
