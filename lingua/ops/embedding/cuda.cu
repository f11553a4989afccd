// Embedding on CUDA. Forward: one block per output row, 16-byte accesses when D % 8 == 0 and the
// pointers are aligned. Backward: stable radix sort of (id, position), then runs of equal ids are
// summed in position order (see embedding.h). Bad ids go to a device error record.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_elem.cuh"
#include "lingua/ops/embedding/embedding.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

// ---- error record ----

// key = (position << 32) | uint32(id), minimised: the smallest bad position wins. kNoError = none.
struct ErrorRecord {
  unsigned long long key;
  int vocab;  // V of a call that saw a bad id
  int ops;    // bit 1: forward, bit 2: backward
};
constexpr unsigned long long kNoError = ~0ull;
constexpr int kForwardBit = 1, kBackwardBit = 2;

__device__ __forceinline__ void report_bad_id(ErrorRecord* rec, int64_t pos, int id, int V, int op_bit) {
  atomicMin(&rec->key, ((unsigned long long)pos << 32) | (unsigned long long)(uint32_t)id);
  atomicExch(&rec->vocab, V);
  atomicOr(&rec->ops, op_bit);
}

// The process's error record, allocated and cleared on first use (synchronously, once).
ErrorRecord* g_record = nullptr;

ErrorRecord* error_record() {
  if (!g_record) {
    static DeviceBuffer* buf = new DeviceBuffer(sizeof(ErrorRecord));  // never freed
    const ErrorRecord clear{kNoError, 0, 0};
    copy_to_device(buf->data(), &clear, sizeof clear);
    g_record = buf->as<ErrorRecord>();
  }
  return g_record;
}

constexpr int kMaxThreads = 256;

// ---- forward ----

template <class TT, class TO, int V>
__global__ void __launch_bounds__(kMaxThreads)
    embedding_forward_kernel(const int32_t* __restrict__ ids, const TT* __restrict__ table, TO* __restrict__ out,
                             int V_, int D, ErrorRecord* rec) {
  const int64_t n = blockIdx.x;
  const int id = ids[n];
  const bool ok = id >= 0 && id < V_;
  if (!ok && threadIdx.x == 0) report_bad_id(rec, n, id, V_, kForwardBit);
  const TT* src = table + (int64_t)(ok ? id : 0) * D;
  TO* dst = out + n * D;
  const int chunks = D / V;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[V];
    if (ok) {
      load<V>(src + (int64_t)c * V, v);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = 0.0f;
    }
    store<V>(dst + (int64_t)c * V, v);
  }
}

// ---- backward ----

// keys[i] = ids[i] when valid, else V (sorts last, skipped); pos[i] = i.
__global__ void embedding_sort_input_kernel(const int32_t* __restrict__ ids, uint32_t* __restrict__ keys,
                                            int32_t* __restrict__ pos, int N, int V_, ErrorRecord* rec) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const int id = ids[i];
  const bool ok = id >= 0 && id < V_;
  if (!ok) report_bad_id(rec, i, id, V_, kBackwardBit);
  keys[i] = ok ? (uint32_t)id : (uint32_t)V_;
  pos[i] = i;
}

// First index j >= lo with keys[j] != k (or N), given keys[lo - 1] == k and keys sorted: galloping
// then binary search, so short runs (the common case) cost one or two loads.
__device__ __forceinline__ int run_end(const uint32_t* keys, int lo, int N, uint32_t k) {
  int hi = lo, step = 1;
  while (hi < N && keys[hi] == k) {
    lo = hi + 1;
    hi = lo + step;
    step <<= 1;
  }
  hi = min(hi, N);
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (keys[mid] == k)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

__device__ __forceinline__ void add4(float (&acc)[4], const float4& r) {
  acc[0] += r.x, acc[1] += r.y, acc[2] += r.z, acc[3] += r.w;
}

// 4 consecutive elements widened to f32: one 16-byte (f32) or 8-byte (bf16) access.
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const bf16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xFFFF0000u),
                     __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xFFFF0000u));
}

// Grid (G, column tiles): block x walks the sorted positions i = x, x + G, ...; where a run of a
// valid id k starts at i, the block's threads (each V columns of the tile) sum dtable[k] and the run's
// dout rows (widened to f32) in position order, 8 rows' loads in flight, and write dtable[k] back.
// Runs are disjoint, so every element of dtable has one writer.
template <int V, class TD>
__global__ void __launch_bounds__(64)
    embedding_backward_kernel(const uint32_t* __restrict__ keys, const int32_t* __restrict__ pos,
                              const TD* __restrict__ dout, float* __restrict__ dtable, int N, int V_, int D) {
  const int64_t col = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * V;
  if (col >= D) return;
  for (int i = blockIdx.x; i < N; i += gridDim.x) {
    const uint32_t k = keys[i];
    if (k >= (uint32_t)V_ || (i > 0 && keys[i - 1] == k)) continue;
    const int end = run_end(keys, i + 1, N, k);
    float* dst = dtable + (int64_t)k * D + col;
    const TD* src = dout + col;
    if constexpr (V == 4) {
      const float4 d0 = *reinterpret_cast<const float4*>(dst);
      float acc[4] = {d0.x, d0.y, d0.z, d0.w};
      int j = i;
      for (; j + 8 <= end; j += 8) {
        float4 r[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) r[q] = load4(src + (int64_t)pos[j + q] * D);
#pragma unroll
        for (int q = 0; q < 8; ++q) add4(acc, r[q]);
      }
      for (; j < end; ++j) add4(acc, load4(src + (int64_t)pos[j] * D));
      *reinterpret_cast<float4*>(dst) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    } else {
      float acc = *dst;
      int j = i;
      for (; j + 8 <= end; j += 8) {
        float r[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) r[q] = to_f32(src[(int64_t)pos[j + q] * D]);
#pragma unroll
        for (int q = 0; q < 8; ++q) acc += r[q];
      }
      for (; j < end; ++j) acc += to_f32(src[(int64_t)pos[j] * D]);
      *dst = acc;
    }
  }
}

// Persistent scratch for the backward: grown (synchronising the stream, then cudaMalloc) only when
// a call needs more than all earlier ones. Shared by all calls, which run in order on
// cuda_stream(). Never freed.
void* backward_scratch(size_t bytes) {
  static DeviceBuffer* buf = new DeviceBuffer();
  return cuda_grow_scratch(*buf, bytes, 1u << 20, "embedding_backward");
}

size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

template <class F>
void with_dtype(DType d, F&& f) {
  if (d == DType::bf16)
    f(bf16{});
  else
    f(float{});
}

}  // namespace

void embedding_forward_cuda(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const char* op = "embedding_forward";
  check_cuda_arg(op, "ids", ids, {DType::i32}, {-1});
  check_cuda_arg(op, "table", table, {DType::f32, DType::bf16}, {-1, -1});
  const int64_t N = ids.size(0), V = table.size(0), D = table.size(1);
  check_cuda_arg(op, "out", out, {DType::f32, DType::bf16}, {N, D});
  LINGUA_CHECK(N < INT32_MAX && V < INT32_MAX && D < INT32_MAX, op, ": too large for the CUDA kernel (ids ",
               ids.str(), ", table ", table.str(), ")");
  if (N == 0 || D == 0) return;
  ErrorRecord* rec = error_record();
  const bool vec = D % 8 == 0 && aligned16(table.data) && aligned16(out.data);
  const int64_t chunks = vec ? D / 8 : D;
  const int threads = (int)std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (chunks + 31) / 32 * 32));
  with_dtype(table.dtype, [&](auto tt) {
    with_dtype(out.dtype, [&](auto to) {
      using TT = decltype(tt);
      using TO = decltype(to);
      auto kernel = vec ? embedding_forward_kernel<TT, TO, 8> : embedding_forward_kernel<TT, TO, 1>;
      kernel<<<(unsigned)N, threads, 0, cuda_stream()>>>(ids.i32(), static_cast<const TT*>(table.data),
                                                          static_cast<TO*>(out.data), (int)V, (int)D, rec);
    });
  });
  CUDA_CHECK_LAUNCH();
}

void embedding_backward_cuda(const Tensor& ids, const Tensor& dout, const Tensor& dtable) {
  const char* op = "embedding_backward";
  check_cuda_arg(op, "ids", ids, {DType::i32}, {-1});
  check_cuda_arg(op, "dtable", dtable, {DType::f32}, {-1, -1});
  const int64_t N = ids.size(0), V = dtable.size(0), D = dtable.size(1);
  check_cuda_arg(op, "dout", dout, {DType::f32, DType::bf16}, {N, D});
  LINGUA_CHECK(N < INT32_MAX && V < INT32_MAX && D < INT32_MAX, op, ": too large for the CUDA kernel (ids ",
               ids.str(), ", dtable ", dtable.str(), ")");
  if (N == 0) return;
  ErrorRecord* rec = error_record();

  // Keys take values 0..V (V: a bad id), so only their low bit_width(V) bits need sorting.
  int end_bit = 1;
  while (end_bit < 32 && (V >> end_bit) != 0) ++end_bit;
  const int n = (int)N;
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const uint32_t*)nullptr, (uint32_t*)nullptr,
                                             (const int32_t*)nullptr, (int32_t*)nullptr, n, 0, end_bit,
                                             cuda_stream()));
  const size_t arr = align256((size_t)N * 4);
  char* base = static_cast<char*>(backward_scratch(4 * arr + temp_bytes));
  uint32_t* keys_in = reinterpret_cast<uint32_t*>(base);
  uint32_t* keys = reinterpret_cast<uint32_t*>(base + arr);
  int32_t* pos_in = reinterpret_cast<int32_t*>(base + 2 * arr);
  int32_t* pos = reinterpret_cast<int32_t*>(base + 3 * arr);
  void* temp = base + 4 * arr;

  embedding_sort_input_kernel<<<ceil_div(N, 256), 256, 0, cuda_stream()>>>(ids.i32(), keys_in, pos_in, n, (int)V,
                                                                          rec);
  CUDA_CHECK_LAUNCH();
  if (D == 0 || V == 0) return;  // nothing to add (bad ids are recorded)
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys, pos_in, pos, n, 0, end_bit,
                                             cuda_stream()));

  const bool vec = D % 4 == 0 && aligned16(dout.data) && aligned16(dtable.data);
  constexpr int kThreads = 64, kMaxRowBlocks = 1024;
  const dim3 grid((unsigned)std::min<int64_t>(N, kMaxRowBlocks), (unsigned)ceil_div(D, kThreads * (vec ? 4 : 1)));
  LINGUA_CHECK(grid.y <= 65535, op, ": D = ", D, " is too large for the CUDA kernel");
  with_dtype(dout.dtype, [&](auto td) {
    using TD = decltype(td);
    auto kernel = vec ? embedding_backward_kernel<4, TD> : embedding_backward_kernel<1, TD>;
    kernel<<<grid, kThreads, 0, cuda_stream()>>>(keys, pos, static_cast<const TD*>(dout.data), dtable.f32(), n,
                                                 (int)V, (int)D);
  });
  CUDA_CHECK_LAUNCH();
}

void embedding_check_errors_cuda() {
  if (!g_record) return;  // no CUDA embedding op has run
  ErrorRecord r;
  copy_to_host(&r, g_record, sizeof r);  // synchronises the stream
  if (r.key == kNoError) return;
  const ErrorRecord clear{kNoError, 0, 0};
  copy_to_device(g_record, &clear, sizeof clear);
  const int64_t position = (int64_t)(r.key >> 32);
  const int32_t id = (int32_t)(uint32_t)(r.key & 0xFFFFFFFFu);
  const char* op = r.ops == kForwardBit    ? "embedding_forward"
                   : r.ops == kBackwardBit ? "embedding_backward"
                                           : "embedding_forward/embedding_backward";
  fail(op, ": id ", id, " at position ", position, " is outside [0, ", r.vocab, ") (found on the GPU, reported by ",
       "embedding_check_errors)");
}

}  // namespace lingua
