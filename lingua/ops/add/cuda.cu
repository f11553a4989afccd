// dst[i] += src[i] on the GPU: one grid-stride kernel per src dtype. With both pointers 16-byte
// aligned, each step moves 16 bytes of src (4 f32 or 8 bf16) and the matching dst float4s; the
// remaining tail (and any misaligned call) goes element by element.
#include <algorithm>
#include <cstdint>

#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/add/add.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xFFFF0000u); }

__global__ void __launch_bounds__(kThreads)
    add_f32_kernel(float* __restrict__ dst, const float* __restrict__ src, int64_t n, int vec) {
  const int64_t start = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
  int64_t done = 0;
  if (vec) {
    const int64_t nv = n / 4;
    float4* d = reinterpret_cast<float4*>(dst);
    const float4* s = reinterpret_cast<const float4*>(src);
    for (int64_t i = start; i < nv; i += stride) d[i] = add4(d[i], s[i]);
    done = nv * 4;
  }
  for (int64_t i = done + start; i < n; i += stride) dst[i] += src[i];
}

__global__ void __launch_bounds__(kThreads)
    add_bf16_kernel(float* __restrict__ dst, const bf16* __restrict__ src, int64_t n, int vec) {
  const int64_t start = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
  int64_t done = 0;
  if (vec) {
    const int64_t nv = n / 8;
    float4* d = reinterpret_cast<float4*>(dst);
    const uint4* s = reinterpret_cast<const uint4*>(src);
    for (int64_t i = start; i < nv; i += stride) {
      const uint4 u = s[i];
      d[2 * i] = add4(d[2 * i], make_float4(bf16_lo(u.x), bf16_hi(u.x), bf16_lo(u.y), bf16_hi(u.y)));
      d[2 * i + 1] = add4(d[2 * i + 1], make_float4(bf16_lo(u.z), bf16_hi(u.z), bf16_lo(u.w), bf16_hi(u.w)));
    }
    done = nv * 8;
  }
  for (int64_t i = done + start; i < n; i += stride) dst[i] += __bfloat162float(src[i]);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void add_into_cuda(const Tensor& dst, const Tensor& src) {
  const char* op = "add_into";
  if (dst.device != Device::cuda || src.device != Device::cuda)
    fail(op, ": tensors on different devices (dst ", dst.str(), ", src ", src.str(), ")");
  if (dst.dtype != DType::f32) fail(op, ": argument 'dst' has dtype ", dtype_name(dst.dtype), ", expected f32");
  if (src.dtype != DType::f32 && src.dtype != DType::bf16)
    fail(op, ": argument 'src' has dtype ", dtype_name(src.dtype), ", expected f32 or bf16");
  const int64_t n = dst.numel();
  LINGUA_CHECK(src.numel() == n, op, ": 'src' ", src.str(), " has ", src.numel(), " elements, 'dst' ", dst.str(),
               " has ", n);
  if (n == 0) return;
  LINGUA_CHECK(dst.data && src.data, op, ": no data (dst ", dst.str(), ", src ", src.str(), ")");

  const int vec = aligned16(dst.data) && aligned16(src.data);
  const int64_t per_thread = vec ? (src.dtype == DType::bf16 ? 8 : 4) : 1;
  const int64_t threads_needed = std::max<int64_t>(n / per_thread, 1) + per_thread;  // vectors + tail
  const int64_t max_blocks = (int64_t)cuda_context().sm_count * 16;
  const unsigned blocks = (unsigned)std::min<int64_t>((threads_needed + kThreads - 1) / kThreads, max_blocks);
  if (src.dtype == DType::f32)
    add_f32_kernel<<<blocks, kThreads, 0, cuda_stream()>>>(static_cast<float*>(dst.data),
                                                           static_cast<const float*>(src.data), n, vec);
  else
    add_bf16_kernel<<<blocks, kThreads, 0, cuda_stream()>>>(static_cast<float*>(dst.data),
                                                            static_cast<const bf16*>(src.data), n, vec);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lingua
