#include <algorithm>
#include <cstring>

#include "lingua/core/profiler.h"
#include "lingua/ops/embedding/embedding.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

// All ids are checked before anything is written, so a bad batch leaves the outputs untouched.
void check_ids(const char* op, const int32_t* ids, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    if (ids[n] < 0 || ids[n] >= V) fail(op, ": id ", ids[n], " at position ", n, " is outside [0, ", V, ")");
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out) {
  LINGUA_PROFILE_SCOPE("embedding_forward");
#ifdef LINGUA_CUDA
  if (ids.device == Device::cuda) return embedding_forward_cuda(ids, table, out);
#endif
  const char* op = "embedding_forward";
  check_op_arg(op, "ids", ids, DType::i32, {-1});
  check_f32(op, "table", table, {-1, -1});
  const int64_t N = ids.size(0), V = table.size(0), D = table.size(1);
  check_f32(op, "out", out, {N, D});
  const int32_t* id = ids.i32();
  check_ids(op, id, N, V);
  const float* tab = table.f32();
  float* y = out.f32();
#pragma omp parallel for schedule(static) if (N * D > kMinParallelElements)
  for (int64_t n = 0; n < N; ++n) std::memcpy(y + n * D, tab + id[n] * D, D * sizeof(float));
}

void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable) {
  LINGUA_PROFILE_SCOPE("embedding_backward");
#ifdef LINGUA_CUDA
  if (ids.device == Device::cuda) return embedding_backward_cuda(ids, dout, dtable);
#endif
  const char* op = "embedding_backward";
  check_op_arg(op, "ids", ids, DType::i32, {-1});
  check_f32(op, "dtable", dtable, {-1, -1});
  const int64_t N = ids.size(0), V = dtable.size(0), D = dtable.size(1);
  check_f32(op, "dout", dout, {N, D});
  const int32_t* id = ids.i32();
  check_ids(op, id, N, V);
  const float* dy = dout.f32();
  float* dtab = dtable.f32();
  // Threads own disjoint column blocks and walk the rows in order, so repeated ids are summed in
  // the same order whatever the thread count.
  constexpr int64_t kCols = 64;
  const int64_t blocks = (D + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (N * D > kMinParallelElements)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t j0 = blk * kCols, j1 = std::min(D, j0 + kCols);
    for (int64_t n = 0; n < N; ++n) {
      float* dst = dtab + id[n] * D;
      const float* src = dy + n * D;
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
  }
}

void embedding_check_errors() {
#ifdef LINGUA_CUDA
  embedding_check_errors_cuda();
#endif
}

}  // namespace lingua
