#include <algorithm>
#include <cstdint>

#include "lingua/core/profiler.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/transpose/transpose.h"

namespace lingua {

namespace {

void check_no_overlap(const char* op, const Tensor& x, const Tensor& y) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(x.data), b = reinterpret_cast<uintptr_t>(y.data);
  if (x.numel() > 0 && a < b + y.nbytes() && b < a + x.nbytes())
    fail(op, ": 'y' (", y.str(), ") overlaps 'x' (", x.str(), "); a transpose cannot run in place");
}

}  // namespace

void transpose(const Tensor& x, const Tensor& y) {
  LINGUA_PROFILE_SCOPE("transpose");
  const char* op = "transpose";
  check_no_overlap(op, x, y);
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return transpose_cuda(x, y);
#endif
  check_f32(op, "x", x, {-1, -1});
  const int64_t R = x.size(0), C = x.size(1);
  check_f32(op, "y", y, {C, R});
  const float* xp = x.f32();
  float* yp = y.f32();
  constexpr int64_t kTile = 32;  // blocked, so neither side strides through memory a row at a time
  for (int64_t r0 = 0; r0 < R; r0 += kTile)
    for (int64_t c0 = 0; c0 < C; c0 += kTile)
      for (int64_t r = r0; r < std::min(R, r0 + kTile); ++r)
        for (int64_t c = c0; c < std::min(C, c0 + kTile); ++c) yp[c * R + r] = xp[r * C + c];
}

}  // namespace lingua
