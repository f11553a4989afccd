#pragma once
// Linear: the one module that multiplies by a weight, y = x W^T (PyTorch layout, W [out, in], no
// bias). It owns its weight parameter(s) and decides how the product is computed:
//  - the compute policy: what the matmul reads (bf16 on CUDA today, the fp32 weights on the CPU);
//    a float8 policy (a scaled copy refreshed after each optimizer step) belongs here;
//  - frozen weights (ParamSpec::trainable = false): no weight gradient, and its matmul is skipped;
//  - room for a structured parametrisation (low-rank, block-diagonal factors), a dense guide
//    branch mixed in by a per-step weight, and a merged dense weight for decoding: each changes
//    what forward / backward run, not their callers.
// Several weights can be stacked by rows ([sum out_i, in]): declared one after the other, they are
// adjacent in every buffer, so one matmul reads them as one matrix (SwiGLU's w1 and w3) while the
// checkpoint still names them apart.
#include <string>
#include <vector>

#include "lingua/model/param_store.h"

namespace lingua {

enum class ComputePolicy {
  bf16,  // CUDA: bf16 operands (the store's bf16 copy), fp32 accumulation; CPU: fp32
};

// A weight's name without ".weight" ("layers.0.attention.wq.weight" -> "layers.0.attention.wq").
std::string weight_base_name(std::string name);

class Linear {
 public:
  Linear() = default;
  // One weight; spec.shape is [out, in].
  Linear(ParamStore& store, ParamSpec spec);
  // Weights stacked by rows, each [out_i, in] (same in, same trainability).
  Linear(ParamStore& store, std::vector<ParamSpec> stacked);
  // Over a parameter another module declared (a head tied to the token embedding).
  static Linear shared(ParamStore& store, int id);

  // y[N, out] = x[N, in] W^T (+ residual[N, out]: may be y itself, fused into the matmul).
  void forward(const Tensor& x, const Tensor& y, const Tensor& residual = Tensor()) const;
  // dx[N, in] = dy W (written, or added with accumulate_dx; may be empty) and dW += dy^T x.
  void backward(const Tensor& x, const Tensor& dy, const Tensor& dx, bool accumulate_dx = false) const;
  // The two halves of backward, for callers that compute x only after dx (a recomputed input).
  void backward_input(const Tensor& dy, const Tensor& dx, bool accumulate_dx = false) const;
  void backward_weight(const Tensor& x, const Tensor& dy) const;

  Tensor compute_weight() const;  // [out, in] what the matmul reads (per the policy)
  Tensor grad() const;            // [out, in] f32, accumulated; empty when frozen
  bool frozen() const;
  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  const std::vector<int>& params() const { return ids_; }
  const ParamStore& store() const { return *store_; }
  // weight_base_name of the first weight.
  std::string name() const;

  // Weight-gradient matmuls run by every Linear of this process (tests: frozen weights skip them).
  static uint64_t weight_grad_matmuls();

 private:
  Tensor stacked(const Tensor& first) const;  // first's memory as the [out, in] stack
  ParamStore* store_ = nullptr;
  std::vector<int> ids_;
  int64_t in_ = 0, out_ = 0;
  ComputePolicy policy_ = ComputePolicy::bf16;
};

}  // namespace lingua
