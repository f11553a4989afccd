#pragma once
// AdamW (PyTorch semantics, decoupled weight decay) and gradient-norm helpers.
//   g  = grad * grad_scale                       (grad_scale: the clipping coefficient)
//   p -= lr * weight_decay * p
//   m  = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
//   p -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// step is 1-based. All buffers fp32, same length.
#include <cstdint>

#include "lingua/core/tensor.h"

namespace lingua {

struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  float grad_scale = 1.0f;
};

void adamw_update(const Tensor& param,  // [n] f32, updated
                  const Tensor& grad,   // [n] f32
                  const Tensor& m,      // [n] f32, updated
                  const Tensor& v,      // [n] f32, updated
                  const AdamWHyper& h);

// Sum of squares in double, summed in a fixed order (deterministic for a given n).
double sum_squares(const Tensor& x);  // [n] f32

// Clipping coefficient for a global norm: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0.
inline float clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? (float)c : 1.0f;
}

}  // namespace lingua
