#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/cast/cast.h"

namespace lingua {
namespace {

// 8 elements per thread: one 32-byte f32 read and one 16-byte bf16 write (or the reverse).
__global__ void f32_to_bf16_kernel(bf16* __restrict__ d, const float* __restrict__ s, int64_t n) {
  int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i + 8 <= n && ((uintptr_t)(s + i) & 31) == 0 && ((uintptr_t)(d + i) & 15) == 0) {
    float4 a = reinterpret_cast<const float4*>(s + i)[0], b = reinterpret_cast<const float4*>(s + i)[1];
    __nv_bfloat162 o[4] = {__floats2bfloat162_rn(a.x, a.y), __floats2bfloat162_rn(a.z, a.w),
                           __floats2bfloat162_rn(b.x, b.y), __floats2bfloat162_rn(b.z, b.w)};
    *reinterpret_cast<uint4*>(d + i) = *reinterpret_cast<uint4*>(o);
  } else {
    for (int64_t j = i; j < n && j < i + 8; ++j) d[j] = __float2bfloat16_rn(s[j]);
  }
}

__global__ void bf16_to_f32_kernel(float* __restrict__ d, const bf16* __restrict__ s, int64_t n) {
  int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  for (int64_t j = i; j < n && j < i + 8; ++j) d[j] = __bfloat162float(s[j]);
}

}  // namespace

void cast_into_cuda(const Tensor& dst, const Tensor& src) {
  const int64_t n = src.numel();
  if (n == 0) return;
  if (dst.dtype == src.dtype) {
    CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, cuda_stream()));
    return;
  }
  const int threads = 256;
  const int blocks = ceil_div(n, 8LL * threads);
  if (dst.dtype == DType::bf16)
    f32_to_bf16_kernel<<<blocks, threads, 0, cuda_stream()>>>(static_cast<bf16*>(dst.data),
                                                              static_cast<const float*>(src.data), n);
  else
    bf16_to_f32_kernel<<<blocks, threads, 0, cuda_stream()>>>(static_cast<float*>(dst.data),
                                                              static_cast<const bf16*>(src.data), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
