#pragma once
// Arena: one allocation sized once before training; a step takes slices from it and releases them
// all at once with reset(). Exceeding the capacity is an internal error (the size formula is wrong).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "lingua/core/error.h"

namespace lingua {

class Arena {
 public:
  Arena() = default;
  explicit Arena(size_t floats) { reserve(floats); }
  void reserve(size_t floats) { buf_.assign(floats, 0.0f); used_ = 0; high_ = 0; }
  float* alloc(size_t n) {
    n = (n + 15) & ~size_t(15);  // 64-byte aligned slices
    LINGUA_CHECK(used_ + n <= buf_.size(), "internal error: activation arena exhausted (capacity ",
                 buf_.size(), " floats, need ", used_ + n, ")");
    float* p = buf_.data() + used_;
    used_ += n;
    if (used_ > high_) high_ = used_;
    return p;
  }
  size_t mark() const { return used_; }
  void release_to(size_t m) { used_ = m; }
  void reset() { used_ = 0; }
  size_t capacity() const { return buf_.size(); }
  size_t high_water() const { return high_; }

 private:
  std::vector<float> buf_;
  size_t used_ = 0, high_ = 0;
};

}  // namespace lingua
