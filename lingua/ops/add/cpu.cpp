#include "lingua/core/profiler.h"
#include "lingua/ops/add/add.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

void add_into(const Tensor& dst, const Tensor& src) {
  LINGUA_PROFILE_SCOPE("add_into");
#ifdef LINGUA_CUDA
  if (dst.device == Device::cuda) return add_into_cuda(dst, src);
#endif
  const char* op = "add_into";
  check_same_device(op, {&dst, &src});
  if (dst.device == Device::cuda) fail(op, ": CUDA is not built in this version");
  if (dst.dtype != DType::f32) fail(op, ": argument 'dst' has dtype ", dtype_name(dst.dtype), ", expected f32");
  if (src.dtype != DType::f32)
    fail(op, ": argument 'src' has dtype ", dtype_name(src.dtype), ", expected f32 (bf16 only on CUDA)");
  const int64_t n = dst.numel();
  LINGUA_CHECK(src.numel() == n, op, ": 'src' ", src.str(), " has ", src.numel(), " elements, 'dst' ", dst.str(),
               " has ", n);
  if (n == 0) return;
  LINGUA_CHECK(dst.data && src.data, op, ": no data (dst ", dst.str(), ", src ", src.str(), ")");
  float* d = dst.f32();
  const float* s = src.f32();
#pragma omp parallel for schedule(static) if (n > kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}

}  // namespace lingua
