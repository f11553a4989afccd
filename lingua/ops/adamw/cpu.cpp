#include <algorithm>
#include <cmath>
#include <vector>

#include "lingua/core/profiler.h"
#include "lingua/core/bf16.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

AdamWStepScalars adamw_step_scalars(const AdamWHyper& h) {
  LINGUA_CHECK(h.step >= 1, "adamw_update: step is 1-based, got ", h.step);
  const double bc1 = 1.0 - std::pow((double)h.beta1, (double)h.step);
  const double bc2 = 1.0 - std::pow((double)h.beta2, (double)h.step);
  AdamWStepScalars s;
  s.decay = (float)(1.0 - (double)h.lr * h.weight_decay);
  s.step_size = (float)(h.lr / bc1);
  s.inv_sqrt_bc2 = (float)(1.0 / std::sqrt(bc2));
  return s;
}

// Follows torch.optim.AdamW (single-tensor path): p *= 1 - lr wd; m += (1 - beta1)(g - m);
// v = beta2 v + (1 - beta2) g^2; p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps).
// Bias corrections are computed in double, the per-element update in fp32.
void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWHyper& h,
                  const Tensor& param_bf16) {
  LINGUA_PROFILE_SCOPE("adamw_update");
#ifdef LINGUA_CUDA
  if (param.device == Device::cuda) return adamw_update_cuda(param, grad, m, v, h, param_bf16);
#endif
  const char* op = "adamw_update";
  check_f32(op, "param", param, {-1});
  const int64_t n = param.size(0);
  check_f32(op, "grad", grad, {n});
  check_f32(op, "m", m, {n});
  check_f32(op, "v", v, {n});
  if (is_given(param_bf16)) check_op_arg(op, "param_bf16", param_bf16, DType::bf16, {n});
  LINGUA_CHECK(h.grad_scale_device == nullptr, op, ": grad_scale_device is for CUDA tensors only");
  LINGUA_CHECK(h.step_device == nullptr, op, ": step_device is for CUDA tensors only");
  const AdamWStepScalars sc = adamw_step_scalars(h);
  const float decay = sc.decay, step_size = sc.step_size, inv_sqrt_bc2 = sc.inv_sqrt_bc2;
  const float b1 = h.beta1, b2 = h.beta2, eps = h.eps, gs = h.grad_scale;
  float* p = param.f32();
  const float* g = grad.f32();
  float* ms = m.f32();
  float* vs = v.f32();
  uint16_t* pb = static_cast<uint16_t*>(param_bf16.data);  // null: no bf16 copy
#pragma omp parallel for schedule(static) if (n > kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * gs;
    const float mi = ms[i] + (1.0f - b1) * (gi - ms[i]);
    const float vi = b2 * vs[i] + (1.0f - b2) * gi * gi;
    ms[i] = mi;
    vs[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
    if (pb) pb[i] = float_to_bf16(p[i]);
  }
}

// Fixed blocks of kBlock elements, each summed in double with kLanes interleaved accumulators, then
// the block sums added in block order: the result depends on n only, not on the thread count.
double sum_squares(const Tensor& x) {
  LINGUA_PROFILE_SCOPE("sum_squares");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return sum_squares_cuda(x);
#endif
  const char* op = "sum_squares";
  check_f32(op, "x", x, {-1});
  constexpr int64_t kBlock = 16384, kLanes = 8;
  const int64_t n = x.size(0);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const float* xs = x.f32();
  std::vector<double> block_sum(blocks);
#pragma omp parallel for schedule(static) if (n > kMinParallelElements)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock, i1 = std::min(n, i0 + kBlock);
    double lane[kLanes] = {};
    int64_t i = i0;
    for (; i + kLanes <= i1; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) lane[j] += (double)xs[i + j] * xs[i + j];
    for (; i < i1; ++i) lane[0] += (double)xs[i] * xs[i];
    double s = 0;
    for (int64_t j = 0; j < kLanes; ++j) s += lane[j];
    block_sum[blk] = s;
  }
  double total = 0;
  for (double s : block_sum) total += s;
  return total;
}

void sum_squares_device(const Tensor& x, double* sq_device, bool accumulate) {
  LINGUA_PROFILE_SCOPE("sum_squares_device");
#ifdef LINGUA_CUDA
  sum_squares_device_cuda(x, sq_device, accumulate);
#else
  fail("sum_squares_device: CUDA is not built in this version (", x.str(), ")");
#endif
}

void clip_coefficient_device(const double* sq_device, double max_norm, float* coef_device, double* norm_device) {
  LINGUA_PROFILE_SCOPE("clip_coefficient_device");
#ifdef LINGUA_CUDA
  clip_coefficient_device_cuda(sq_device, max_norm, coef_device, norm_device);
#else
  fail("clip_coefficient_device: CUDA is not built in this version");
#endif
}

}  // namespace lingua
