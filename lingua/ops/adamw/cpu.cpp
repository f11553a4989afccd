#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lingua/core/profiler.h"
#include "lingua/core/bf16.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

// The constants of one step as the per-element update reads them.
struct AdamWCpuConsts {
  float decay, step_size, inv_sqrt_bc2, b1, b2, eps, gs;
};

// The checks and constants shared by adamw_update and adamw_update_rows.
// grad_scale_device and step_device are host pointers here (the tensors' memory).
AdamWCpuConsts adamw_cpu_consts(const char* op, const AdamWHyper& h) {
  const AdamWStepScalars sc = h.step_device ? *h.step_device : adamw_step_scalars(h);
  const float gs = h.grad_scale_device ? h.grad_scale * *h.grad_scale_device : h.grad_scale;
  return {sc.decay, sc.step_size, sc.inv_sqrt_bc2, h.beta1, h.beta2, h.eps, gs};
}

// Element i: the one fp32 expression both the dense and the row-sparse update use (so they agree
// bit for bit, and with the CUDA kernels, which round each operation the same way).
inline void adamw_element(const AdamWCpuConsts& k, int64_t i, float* p, const float* g, float* ms, float* vs,
                          uint16_t* pb) {
  const float gi = g[i] * k.gs;
  const float mi = ms[i] + (1.0f - k.b1) * (gi - ms[i]);
  const float vi = k.b2 * vs[i] + (1.0f - k.b2) * gi * gi;
  ms[i] = mi;
  vs[i] = vi;
  p[i] = p[i] * k.decay - k.step_size * mi / (std::sqrt(vi) * k.inv_sqrt_bc2 + k.eps);
  if (pb) pb[i] = float_to_bf16(p[i]);
}

// Sum of squares of x[0, n) in double with kLanes interleaved accumulators (a fixed order).
constexpr int64_t kLanes = 8;
double sum_squares_span(const float* xs, int64_t n) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lane[j] += (double)xs[i + j] * xs[i + j];
  for (; i < n; ++i) lane[0] += (double)xs[i] * xs[i];
  double s = 0;
  for (int64_t j = 0; j < kLanes; ++j) s += lane[j];
  return s;
}

}  // namespace

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
  const AdamWCpuConsts k = adamw_cpu_consts(op, h);
  if (std::isnan(k.gs)) return;  // a skipped step
  float* p = param.f32();
  const float* g = grad.f32();
  float* ms = m.f32();
  float* vs = v.f32();
  uint16_t* pb = static_cast<uint16_t*>(param_bf16.data);  // null: no bf16 copy
#pragma omp parallel for schedule(static) if (n > kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) adamw_element(k, i, p, g, ms, vs, pb);
}

void mark_rows(const Tensor& ids, const Tensor& rows) {
  LINGUA_PROFILE_SCOPE("mark_rows");
#ifdef LINGUA_CUDA
  if (ids.device == Device::cuda) return mark_rows_cuda(ids, rows);
#endif
  const char* op = "mark_rows";
  check_op_arg(op, "ids", ids, DType::i32, {-1});
  check_op_arg(op, "rows", rows, DType::i32, {-1});
  const int64_t N = ids.size(0), R = rows.size(0);
  const int32_t* id = ids.i32();
  int32_t* r = rows.i32();
  // All ids are checked before anything is written, so a bad batch leaves rows untouched.
  for (int64_t n = 0; n < N; ++n)
    if (id[n] < 0 || id[n] >= R) fail(op, ": id ", id[n], " at position ", n, " is outside [0, ", R, ")");
  for (int64_t n = 0; n < N; ++n) r[id[n]] = 1;
}

void adamw_update_rows(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor& rows,
                       const AdamWHyper& h, const Tensor& param_bf16) {
  LINGUA_PROFILE_SCOPE("adamw_update_rows");
#ifdef LINGUA_CUDA
  if (param.device == Device::cuda) return adamw_update_rows_cuda(param, grad, m, v, rows, h, param_bf16);
#endif
  const char* op = "adamw_update_rows";
  check_f32(op, "param", param, {-1, -1});
  const int64_t R = param.size(0), C = param.size(1);
  check_f32(op, "grad", grad, {R, C});
  check_f32(op, "m", m, {R, C});
  check_f32(op, "v", v, {R, C});
  check_op_arg(op, "rows", rows, DType::i32, {R});
  if (is_given(param_bf16)) check_op_arg(op, "param_bf16", param_bf16, DType::bf16, {R, C});
  const AdamWCpuConsts k = adamw_cpu_consts(op, h);
  if (std::isnan(k.gs)) return;  // a skipped step
  float* p = param.f32();
  const float* g = grad.f32();
  float* ms = m.f32();
  float* vs = v.f32();
  const int32_t* touched = rows.i32();
  uint16_t* pb = static_cast<uint16_t*>(param_bf16.data);  // null: no bf16 copy
#pragma omp parallel for schedule(static) if (R * C > kMinParallelElements)
  for (int64_t r = 0; r < R; ++r) {
    if (touched[r] == 0) continue;
    for (int64_t i = r * C; i < (r + 1) * C; ++i) adamw_element(k, i, p, g, ms, vs, pb);
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
  constexpr int64_t kBlock = 16384;
  const int64_t n = x.size(0);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const float* xs = x.f32();
  std::vector<double> block_sum(blocks);
#pragma omp parallel for schedule(static) if (n > kMinParallelElements)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kBlock, i1 = std::min(n, i0 + kBlock);
    block_sum[blk] = sum_squares_span(xs + i0, i1 - i0);
  }
  double total = 0;
  for (double s : block_sum) total += s;
  return total;
}

// Each touched row summed as sum_squares sums a block (kLanes interleaved accumulators), then the
// row sums added in row order: the result depends on R, C and the mask only, not the thread count.
double sum_squares_rows(const Tensor& x, const Tensor& rows) {
  LINGUA_PROFILE_SCOPE("sum_squares_rows");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return sum_squares_rows_cuda(x, rows);
#endif
  const char* op = "sum_squares_rows";
  check_f32(op, "x", x, {-1, -1});
  const int64_t R = x.size(0), C = x.size(1);
  check_op_arg(op, "rows", rows, DType::i32, {R});
  const float* xs = x.f32();
  const int32_t* touched = rows.i32();
  std::vector<double> row_sum(R, 0.0);
#pragma omp parallel for schedule(static) if (R * C > kMinParallelElements)
  for (int64_t r = 0; r < R; ++r)
    if (touched[r] != 0) row_sum[r] = sum_squares_span(xs + r * C, C);
  double total = 0;
  for (double s : row_sum) total += s;
  return total;
}

void sum_squares_device(const Tensor& x, double* sq_device, bool accumulate) {
  LINGUA_PROFILE_SCOPE("sum_squares_device");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return sum_squares_device_cuda(x, sq_device, accumulate);
#endif
  LINGUA_CHECK(x.device == Device::cpu, "sum_squares_device: CUDA is not built in this version (", x.str(), ")");
  const double s = sum_squares(x);
  *sq_device = accumulate ? *sq_device + s : s;
}

void sum_squares_rows_device(const Tensor& x, const Tensor& rows, double* sq_device, bool accumulate) {
  LINGUA_PROFILE_SCOPE("sum_squares_rows_device");
#ifdef LINGUA_CUDA
  if (x.device == Device::cuda) return sum_squares_rows_device_cuda(x, rows, sq_device, accumulate);
#endif
  LINGUA_CHECK(x.device == Device::cpu, "sum_squares_rows_device: CUDA is not built in this version (", x.str(), ")");
  const double s = sum_squares_rows(x, rows);
  *sq_device = accumulate ? *sq_device + s : s;
}

void skip_step_if_nonfinite_device(Device device, const double* const* sq_device, float* const* coef_device, int n) {
  LINGUA_CHECK(n >= 0 && n <= kMaxGuardedGroups, "skip_step_if_nonfinite_device: ", n, " groups (at most ",
               kMaxGuardedGroups, ")");
  if (device == Device::cpu) {
    bool finite = true;
    for (int i = 0; i < n; ++i) finite = finite && std::isfinite(*sq_device[i]);
    if (!finite)
      for (int i = 0; i < n; ++i) *coef_device[i] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
#ifdef LINGUA_CUDA
  skip_step_if_nonfinite_device_cuda(sq_device, coef_device, n);
#else
  fail("skip_step_if_nonfinite_device: CUDA is not built in this version");
#endif
}

void clip_coefficient_device(Device device, const double* sq_device, double max_norm, float* coef_device,
                             double* norm_device) {
  LINGUA_PROFILE_SCOPE("clip_coefficient_device");
  if (device == Device::cpu) {
    const double norm = std::sqrt(*sq_device);
    *coef_device = clip_coefficient(norm, max_norm);
    if (norm_device) *norm_device = norm;
    return;
  }
#ifdef LINGUA_CUDA
  clip_coefficient_device_cuda(sq_device, max_norm, coef_device, norm_device);
#else
  fail("clip_coefficient_device: CUDA is not built in this version");
#endif
}

}  // namespace lingua
