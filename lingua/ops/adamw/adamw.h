#pragma once
// AdamW (PyTorch semantics, decoupled weight decay) and gradient-norm helpers.
//   g  = grad * grad_scale                       (grad_scale: the clipping coefficient)
//   p -= lr * weight_decay * p
//   m  = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
//   p -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// step is 1-based. param, grad, m, v: fp32, same length, on one device.
//
// CUDA: the same fp32 per-element arithmetic as the CPU (each operation rounded separately, no FMA
// contraction), one pass over the buffers, optionally writing the bf16 copy of the updated
// parameter that the matmuls read (param_bf16) in the same pass.
#include <cstdint>

#include "lingua/core/tensor.h"

namespace lingua {

// The per-step constants of the update, derived from lr, step and weight_decay (bias corrections in
// double, then rounded to float, as both paths compute them).
struct AdamWStepScalars {
  float decay;         // 1 - lr * weight_decay
  float step_size;     // lr / (1 - beta1^step)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^step)
};

struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  float grad_scale = 1.0f;
  // Optional, in the memory of the tensors' device (device memory on CUDA, host memory on the
  // CPU), read when the update runs (on CUDA in stream order), so that a step captured once in a
  // CUDA graph reads each step's values:
  //  - grad_scale_device: one float multiplied into grad_scale, e.g. the clip coefficient written
  //    by clip_coefficient_device(), so a step with clipping needs no host synchronisation; a NaN
  //    there skips the update (param, m, v and param_bf16 are left as they are: see
  //    skip_step_if_nonfinite_device);
  //  - step_device: adamw_step_scalars(h) of this step, read instead of lr, step and weight_decay
  //    (which are then not read); bitwise the same update as the by-value path. One per distinct
  //    (lr, weight_decay) parameter group.
  const float* grad_scale_device = nullptr;
  const AdamWStepScalars* step_device = nullptr;
};

// The step constants for h (h.step >= 1). Host arithmetic, exactly what adamw_update uses.
AdamWStepScalars adamw_step_scalars(const AdamWHyper& h);

void adamw_update(const Tensor& param,  // [n] f32, updated
                  const Tensor& grad,   // [n] f32
                  const Tensor& m,      // [n] f32, updated
                  const Tensor& v,      // [n] f32, updated
                  const AdamWHyper& h,
                  // optional [n] bf16 on param's device: written with the updated param rounded to
                  // bf16 (round to nearest even); an empty Tensor() skips it
                  const Tensor& param_bf16 = Tensor());

// Sum of squares in double, summed in a fixed order (deterministic for a given n). For a CUDA
// tensor it synchronises (the result is a host value); it matches the CPU's within ~1e-12
// relative (a different fixed order), and is bitwise reproducible run to run.
double sum_squares(const Tensor& x);  // [n] f32

// Clipping coefficient for a global norm: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0.
inline float clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? (float)c : 1.0f;
}

// ---- Gradient clipping without a host round trip ----
// The twin of
//   sq = sum_i sum_squares(grad_i);  norm = sqrt(sq);  coef = clip_coefficient(norm, max_norm)
// whose results stay in the memory of the tensors' device (device memory on CUDA, host memory on
// the CPU), for a training step that never waits for the GPU. sq, norm (double) and coef (float)
// live in memory the caller owns (e.g. a parameter group's slot of StepScalars):
//   for (k = 0; k < count; ++k) sum_squares_device(grad[k], sq, /*accumulate=*/k > 0);
//   clip_coefficient_device(device, sq, max_norm, coef, norm);   // norm: for logging
//   h.grad_scale_device = coef;  adamw_update(..., h, ...) for each parameter of the group
// Deterministic: each tensor is summed in a fixed order (as sum_squares) and added to *sq in call
// (stream) order, so the total is bitwise reproducible for the same list of tensors; coef equals
// clip_coefficient(sqrt(*sq), max_norm) exactly. On the CPU *sq gets exactly sum_squares(x).
// On CUDA neither synchronises (they can be captured in a CUDA graph), except that
// sum_squares_device grows its partial-sum scratch (a synchronisation and cudaMalloc) the first time
// a tensor needs more than all earlier ones: run the same calls once eagerly before capturing.
void sum_squares_device(const Tensor& x,      // [n] f32
                        double* sq_device,    // *sq_device = (accumulate ? *sq_device : 0) + sum x^2
                        bool accumulate);
void clip_coefficient_device(Device device,  // where sq, coef and norm live
                             const double* sq_device, double max_norm,
                             float* coef_device,             // written
                             double* norm_device = nullptr); // written when given: sqrt(*sq_device)
// Skipping a step whose gradients are not finite, without the host: run after
// clip_coefficient_device of every parameter group of the step. When any of the n sums of squares
// is NaN or inf (a NaN or inf gradient anywhere), every group's coefficient is set to NaN, and the
// updates reading them (grad_scale_device) leave their tensors unchanged: the whole step is
// skipped, never a part of it. The caller reads the norms afterwards to learn that it happened.
// n <= kMaxGuardedGroups; on CUDA one tiny kernel, capturable.
constexpr int kMaxGuardedGroups = 16;
void skip_step_if_nonfinite_device(Device device,  // where the sums and coefficients live
                                   const double* const* sq_device, float* const* coef_device, int n);
// The CUDA form (device memory).
inline void clip_coefficient_device(const double* sq_device, double max_norm, float* coef_device,
                                    double* norm_device = nullptr) {
  clip_coefficient_device(Device::cuda, sq_device, max_norm, coef_device, norm_device);
}

// ---- Row-sparse AdamW for embedding-like tables ----
// A table [R, C] indexed by token id (an embedding-like table): a step's gradient is non-zero
// only in the rows of the ids the step saw. These functions update, and take the norm of, only the
// rows marked in `rows` ([R] i32, nonzero = touched), so a step costs in proportion to the rows it
// touched. The update is "lazy" AdamW: an untouched row is left exactly as it is (no weight decay,
// no decay of m and v, no step from the old momentum), which differs from the dense update of a
// zero gradient row; the bias corrections use the global step h.step like the dense update.
//   rows.zero();  mark_rows(ids_of_this_step, rows);   // for each micro-batch of the step
//   sq = sum_squares_rows(grad, rows);                  // the table's part of the gradient norm
//   adamw_update_rows(param, grad, m, v, rows, h, param_bf16);
// All tensors on one device. On CUDA none of the three synchronises the host except
// sum_squares_rows (whose result is a host value); all may be captured in a CUDA graph.

// rows[ids[n]] = 1 for every n; rows is not cleared first (the caller zeroes it), so calls for
// several micro-batches accumulate. CPU: an id outside [0, R) is an Error naming its position and
// value, raised before anything is written. CUDA: ids outside [0, R) are skipped silently (the
// caller validates ids on the host, e.g. the embedding's own checks); no synchronisation.
void mark_rows(const Tensor& ids,    // [N] i32
               const Tensor& rows);  // [R] i32, updated

// For each row r with rows[r] != 0: exactly the per-element update of adamw_update on the row's
// C elements (bitwise the same arithmetic, grad_scale, grad_scale_device and step_device included,
// and the same results on the CPU and CUDA). A row with rows[r] == 0 is neither read nor written in
// param, grad, m, v and param_bf16. With every row touched it equals adamw_update on the flat
// [R * C] buffers bit for bit.
void adamw_update_rows(const Tensor& param,  // [R, C] f32, updated
                       const Tensor& grad,   // [R, C] f32
                       const Tensor& m,      // [R, C] f32, updated
                       const Tensor& v,      // [R, C] f32, updated
                       const Tensor& rows,   // [R] i32: nonzero = update this row
                       const AdamWHyper& h,
                       // optional [R, C] bf16: the touched rows' updated params rounded to bf16;
                       // an empty Tensor() skips it
                       const Tensor& param_bf16 = Tensor());

// Sum of x^2 over the rows with rows[r] != 0, in double, in a fixed order (deterministic for a
// given R, C and mask; 0 when no row is marked). For CUDA tensors it synchronises (the result is a
// host value); it matches the CPU's within ~1e-12 relative (a different fixed order) and is
// bitwise reproducible run to run, independent of x's alignment.
double sum_squares_rows(const Tensor& x,      // [R, C] f32
                        const Tensor& rows);  // [R] i32
// The twin that keeps the result in the tensors' memory, as sum_squares_device:
// *sq_device = (accumulate ? *sq_device : 0) + the value sum_squares_rows returns for the same
// tensors (bitwise); on CUDA in stream order, without synchronising. It shares
// sum_squares_device's partial-sum scratch, grown (a synchronisation and cudaMalloc) only when a
// call needs more than all earlier ones: run the same calls once eagerly before capturing.
void sum_squares_rows_device(const Tensor& x,     // [R, C] f32
                             const Tensor& rows,  // [R] i32
                             double* sq_device, bool accumulate);

// CUDA implementation (cuda.cu); called by the functions above for GPU tensors.
void adamw_update_cuda(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamWHyper& h,
                       const Tensor& param_bf16);
double sum_squares_cuda(const Tensor& x);
void sum_squares_device_cuda(const Tensor& x, double* sq_device, bool accumulate);
void clip_coefficient_device_cuda(const double* sq_device, double max_norm, float* coef_device, double* norm_device);
void skip_step_if_nonfinite_device_cuda(const double* const* sq_device, float* const* coef_device, int n);
void mark_rows_cuda(const Tensor& ids, const Tensor& rows);
void adamw_update_rows_cuda(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                            const Tensor& rows, const AdamWHyper& h, const Tensor& param_bf16);
double sum_squares_rows_cuda(const Tensor& x, const Tensor& rows);
void sum_squares_rows_device_cuda(const Tensor& x, const Tensor& rows, double* sq_device, bool accumulate);

}  // namespace lingua
