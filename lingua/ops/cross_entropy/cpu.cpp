#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lingua/core/profiler.h"
#include "lingua/ops/cross_entropy/cross_entropy.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {
// Rows per chunk: 64..256 (the dw sgemm sums over a chunk's rows: more rows, better efficiency),
// fewer for a large vocabulary so that the [rows, V] logits stay within about 32 MB.
int64_t chunk_rows(int64_t V) { return std::clamp<int64_t>((int64_t(1) << 23) / std::max<int64_t>(V, 1), 64, 256); }

// The CPU path of both entry points: returns the sum of nll.
double cross_entropy_cpu(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll, float grad_scale,
                         const Tensor& dx, const Tensor& dw) {
  const char* op = "output_cross_entropy";
  check_f32(op, "x", x, {-1, -1});
  const int64_t N = x.size(0), D = x.size(1);
  check_f32(op, "w", w, {-1, D});
  const int64_t V = w.size(0);
  check_op_arg(op, "targets", targets, DType::i32, {N});
  if (is_given(nll)) check_f32(op, "nll", nll, {N});
  if (is_given(dx)) check_f32(op, "dx", dx, {N, D});
  if (is_given(dw)) check_f32(op, "dw", dw, {V, D});
  LINGUA_CHECK(V > 0 && D > 0, op, ": empty vocabulary or model dimension (w ", w.str(), ")");
  const int32_t* tgt = targets.i32();
  for (int64_t n = 0; n < N; ++n)
    if (tgt[n] >= V) fail(op, ": target ", tgt[n], " at row ", n, " is outside the vocabulary [0, ", V, ")");

  const bool want_grad = is_given(dx) || is_given(dw);
  const float* xs = x.f32();
  const float* ws = w.f32();
  float* nlls = is_given(nll) ? nll.f32() : nullptr;
  const int64_t C = chunk_rows(V);
  std::vector<float> logits(std::min(C, N) * V);
  std::vector<float> row_nll(std::min(C, N));
  double total = 0;

  for (int64_t n0 = 0; n0 < N; n0 += C) {
    const int64_t rows = std::min(C, N - n0);
    const float* xc = xs + n0 * D;
    // logits[rows, V] = x[n0 : n0 + rows] w^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)V, (int)D, 1.0f, xc, (int)D, ws, (int)D, 0.0f,
                logits.data(), (int)V);

    // Per row: max, logsumexp, nll; with gradients the row is then overwritten by
    // dlogits = (softmax - onehot) * grad_scale (zero for ignored rows).
#pragma omp parallel for schedule(static) if (rows * V > kMinParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      float* l = logits.data() + r * V;
      const int32_t target = tgt[n0 + r];
      if (target < 0) {
        row_nll[r] = 0.0f;
        if (want_grad) std::fill(l, l + V, 0.0f);
        continue;
      }
      const float target_logit = l[target];
      float mx = -INFINITY;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, l[j]);
      double sum = 0;
      for (int64_t j = 0; j < V; ++j) {  // the row becomes exp(logit - max), reused for the gradient
        l[j] = std::exp(l[j] - mx);
        sum += l[j];
      }
      row_nll[r] = mx + (float)std::log(sum) - target_logit;
      if (want_grad) {
        const float scale = (float)(grad_scale / sum);
        for (int64_t j = 0; j < V; ++j) l[j] *= scale;
        l[target] -= grad_scale;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {  // in row order: deterministic total
      if (nlls) nlls[n0 + r] = row_nll[r];
      total += row_nll[r];
    }

    if (is_given(dx))  // dx[rows, D] = dlogits[rows, V] w[V, D]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)D, (int)V, 1.0f, logits.data(), (int)V, ws,
                  (int)D, 0.0f, dx.f32() + n0 * D, (int)D);
    if (is_given(dw))  // dw[V, D] += dlogits[rows, V]^T x[rows, D]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)V, (int)D, (int)rows, 1.0f, logits.data(), (int)V, xc,
                  (int)D, 1.0f, dw.f32(), (int)D);
  }
  return total;
}

}  // namespace

double output_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                            float grad_scale, const Tensor& dx, const Tensor& dw) {
  LINGUA_PROFILE_SCOPE("output_cross_entropy");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return output_cross_entropy_cuda(x, w, targets, nll, grad_scale, dx, dw);
#endif
  return cross_entropy_cpu(x, w, targets, nll, grad_scale, dx, dw);
}

void output_cross_entropy_sum(const Tensor& x, const Tensor& w, const Tensor& targets, const Tensor& nll,
                              float grad_scale, const Tensor& dx, const Tensor& dw, double* loss_sum,
                              bool accumulate) {
  LINGUA_PROFILE_SCOPE("output_cross_entropy");
  LINGUA_CHECK(loss_sum != nullptr, "output_cross_entropy_sum: no address for the loss sum");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda)
    return output_cross_entropy_sum_cuda(x, w, targets, nll, grad_scale, dx, dw, loss_sum, accumulate);
#endif
  const double total = cross_entropy_cpu(x, w, targets, nll, grad_scale, dx, dw);
  *loss_sum = accumulate ? *loss_sum + total : total;
}

}  // namespace lingua
