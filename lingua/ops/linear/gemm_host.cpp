// gemm.h's product on the CPU: one column-major cblas_sgemm per batch entry.
#include <cblas.h>

#include "lingua/core/error.h"
#include "lingua/ops/linear/gemm.h"

namespace lingua {

void gemm_host(const Gemm& g, float beta) {
  LINGUA_ASSERT(beta == 0.0f || beta == 1.0f);
  LINGUA_CHECK(g.ab == DType::f32 && g.c == DType::f32, "internal error: gemm_host takes f32 only");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  for (int64_t b = 0; b < g.batch; ++b) {
    float* d = static_cast<float*>(g.D) + b * g.stride_c;
    const float* c = static_cast<const float*>(g.C) + b * g.stride_c;
    if (g.k == 0) {  // an empty sum: D = beta C
      for (int64_t j = 0; j < g.n; ++j)
        for (int64_t r = 0; r < g.m; ++r) d[r + j * g.ldc] = beta == 0.0f ? 0.0f : c[r + j * g.ldc];
      continue;
    }
    if (beta != 0.0f && c != d)
      for (int64_t j = 0; j < g.n; ++j)
        for (int64_t r = 0; r < g.m; ++r) d[r + j * g.ldc] = c[r + j * g.ldc];
    cblas_sgemm(CblasColMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, (int)g.m, (int)g.n,
                (int)g.k, 1.0f, static_cast<const float*>(g.A) + b * g.stride_a, (int)g.lda,
                static_cast<const float*>(g.B) + b * g.stride_b, (int)g.ldb, beta, d, (int)g.ldc);
  }
}

}  // namespace lingua
