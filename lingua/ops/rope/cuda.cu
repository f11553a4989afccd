// RoPE on CUDA: one block per token (b, t), threads over the token's H * hd elements, 8 elements
// (4 pairs) per 16-byte load when hd % 8 == 0 and x is 16-byte aligned, else one pair at a time.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/rope/rope.h"

namespace lingua {

namespace {

constexpr int kMaxThreads = 256;

// table: [max_pos, half] float2 (cos, sin). Block = token b * T + t: row b * S + prefix + t of x,
// position pos0 + t. Element
// chunk c of the token covers head c / (hd / V), pairs (c % (hd / V)) * V / 2 + [0, V / 2).
// Each product and sum is rounded separately (__fmul_rn etc.), as the CPU's fp32 loop.
template <class T, int V>
__global__ void __launch_bounds__(kMaxThreads)
    rope_kernel(T* __restrict__ x, const float2* __restrict__ table, int T_, int S, int prefix, int H, int hd, int pos0,
                float sign) {
  const int64_t b = blockIdx.x / (unsigned)T_;
  const int t = (int)(blockIdx.x % (unsigned)T_);
  const int half = hd / 2;
  const float2* cs = table + (int64_t)(pos0 + t) * half;
  T* row = x + (b * S + prefix + t) * H * hd;
  const int per_head = hd / V;
  const int chunks = H * per_head;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    const int i0 = (c % per_head) * (V / 2);
    float v[V];
    load<V>(row + (int64_t)c * V, v);
    float2 r[V / 2];
    if constexpr (V == 8) {  // 4 pairs: 32 bytes of the table, 32-byte aligned as hd % 8 == 0
      const float4 lo = reinterpret_cast<const float4*>(cs + i0)[0];
      const float4 hi = reinterpret_cast<const float4*>(cs + i0)[1];
      r[0] = make_float2(lo.x, lo.y), r[1] = make_float2(lo.z, lo.w);
      r[2] = make_float2(hi.x, hi.y), r[3] = make_float2(hi.z, hi.w);
    } else {
#pragma unroll
      for (int p = 0; p < V / 2; ++p) r[p] = cs[i0 + p];
    }
#pragma unroll
    for (int p = 0; p < V / 2; ++p) {
      const float x0 = v[2 * p], x1 = v[2 * p + 1];
      const float co = r[p].x, si = sign * r[p].y;
      v[2 * p] = __fsub_rn(__fmul_rn(x0, co), __fmul_rn(x1, si));
      v[2 * p + 1] = __fadd_rn(__fmul_rn(x0, si), __fmul_rn(x1, co));
    }
    store<V>(row + (int64_t)c * V, v);
  }
}

// The table's device copy, uploaded on first use (see RopeTable::device).
const float2* device_table(const char* op, const RopeTable& table) {
  const size_t n = (size_t)table.max_pos * table.half;
  if (!table.device || table.device->bytes() != n * sizeof(float2)) {
    LINGUA_CHECK(table.cos.size() == n && table.sin.size() == n, op, ": the rope table's cos/sin do not hold ",
                 table.max_pos, " x ", table.half, " values");
    std::vector<float> interleaved(2 * n);
    for (size_t i = 0; i < n; ++i) {
      interleaved[2 * i] = table.cos[i];
      interleaved[2 * i + 1] = table.sin[i];
    }
    auto buf = std::make_shared<DeviceBuffer>(n * sizeof(float2));
    copy_to_device(buf->data(), interleaved.data(), n * sizeof(float2));
    table.device = std::move(buf);
  }
  return table.device->as<float2>();
}

void rope_apply_cuda(const char* op, const Tensor& x, const RopeTable& table, int pos0, int prefix, bool inverse) {
  check_cuda_arg(op, "x", x, {DType::f32, DType::bf16}, {-1, -1, -1, -1});
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), hd = x.size(3);
  LINGUA_CHECK(prefix >= 0 && prefix <= S, op, ": prefix ", prefix, " is outside [0, ", S, "]");
  const int64_t T = S - prefix;
  LINGUA_CHECK(hd % 2 == 0, op, ": head_dim must be even, got ", hd);
  LINGUA_CHECK(hd == 2 * (int64_t)table.half, op, ": head_dim ", hd, " does not match the table (", 2 * table.half,
               ")");
  LINGUA_CHECK(pos0 >= 0 && pos0 + T <= table.max_pos, op, ": positions [", pos0, ", ", pos0 + T,
               ") exceed the table's max_pos ", table.max_pos);
  LINGUA_CHECK(B * S < INT32_MAX && H * hd < INT32_MAX, op, ": x is too large for the CUDA kernel (", x.str(), ")");
  if (B * T * H * hd == 0) return;
  const float2* tab = device_table(op, table);
  const bool vec = hd % 8 == 0 && (reinterpret_cast<uintptr_t>(x.data) & 15) == 0;
  const int V = vec ? 8 : 2;
  const int64_t chunks = H * hd / V;
  const int threads = (int)std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (chunks + 31) / 32 * 32));
  const float sign = inverse ? -1.0f : 1.0f;
  const unsigned blocks = (unsigned)(B * T);
  if (x.dtype == DType::bf16) {
    auto kernel = vec ? rope_kernel<bf16, 8> : rope_kernel<bf16, 2>;
    kernel<<<blocks, threads, 0, cuda_stream()>>>(static_cast<bf16*>(x.data), tab, (int)T, (int)S, prefix, (int)H,
                                                   (int)hd, pos0, sign);
  } else {
    auto kernel = vec ? rope_kernel<float, 8> : rope_kernel<float, 2>;
    kernel<<<blocks, threads, 0, cuda_stream()>>>(x.f32(), tab, (int)T, (int)S, prefix, (int)H, (int)hd, pos0, sign);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward_cuda(const Tensor& x, const RopeTable& table, int pos0, int prefix) {
  rope_apply_cuda("rope_forward", x, table, pos0, prefix, false);
}

void rope_backward_cuda(const Tensor& dx, const RopeTable& table, int pos0, int prefix) {
  rope_apply_cuda("rope_backward", dx, table, pos0, prefix, true);
}

}  // namespace lingua
