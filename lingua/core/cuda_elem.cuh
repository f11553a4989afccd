#pragma once
// For .cu files: element access of kernels over f32 or bf16 tensors with fp32 math.
//   to_f32 / from_f32: widen, or round to nearest even into the element type;
//   load<V> / store<V>: V consecutive elements; V == 8 is one (bf16) or two (f32) 16-byte
//   accesses and needs p 16-byte aligned (check with aligned16), other V go element by element.
#include <cstdint>
#include <type_traits>

#include "lingua/core/cuda_utils.cuh"

namespace lingua {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void from_f32(float v, float* p) { *p = v; }
__device__ __forceinline__ void from_f32(float v, bf16* p) { *p = __float2bfloat16_rn(v); }

template <int V, class T>
__device__ __forceinline__ void load(const T* p, float (&v)[V]) {
  if constexpr (V == 8 && std::is_same_v<T, float>) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else if constexpr (V == 8) {
    static_assert(std::is_same_v<T, bf16>);
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = __uint_as_float(w[k] << 16);              // low half: element 2k
      v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);  // high half: element 2k + 1
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = to_f32(p[k]);
  }
}

template <int V, class T>
__device__ __forceinline__ void store(T* p, const float (&v)[V]) {
  if constexpr (V == 8 && std::is_same_v<T, float>) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else if constexpr (V == 8) {
    static_assert(std::is_same_v<T, bf16>);
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k]));
      const uint32_t hi = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k + 1]));
      w[k] = lo | (hi << 16);
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) from_f32(v[k], p + k);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace lingua
