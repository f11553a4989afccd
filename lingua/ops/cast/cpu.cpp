#include <cstring>

#include "lingua/core/profiler.h"
#include "lingua/core/bf16.h"
#include "lingua/ops/cast/cast.h"

namespace lingua {

void cast_into(const Tensor& dst, const Tensor& src) {
  LINGUA_PROFILE_SCOPE("cast_into");
  LINGUA_CHECK(dst.numel() == src.numel(), "cast_into: ", dst.str(), " <- ", src.str(), ": element counts differ");
  LINGUA_CHECK(dst.device == src.device, "cast_into: tensors on different devices");
  for (const Tensor* t : {&dst, &src})
    LINGUA_CHECK(t->dtype == DType::f32 || t->dtype == DType::bf16, "cast_into: dtype ", dtype_name(t->dtype),
                 " is not f32 or bf16");
#ifdef LINGUA_CUDA
  if (dst.device == Device::cuda) return cast_into_cuda(dst, src);
#endif
  LINGUA_CHECK(dst.device == Device::cpu, "cast_into: CUDA is not built in this version");
  const int64_t n = src.numel();
  if (dst.dtype == src.dtype) {
    std::memcpy(dst.data, src.data, src.nbytes());
  } else if (dst.dtype == DType::bf16) {
    const float* s = static_cast<const float*>(src.data);
    uint16_t* d = static_cast<uint16_t*>(dst.data);
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(s[i]);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src.data);
    float* d = static_cast<float*>(dst.data);
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);
  }
}

}  // namespace lingua
