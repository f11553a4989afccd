#pragma once
// An observer of the tensors a forward and backward pass through (Lingua's probe: statistics of
// linear layers' inputs, outputs and gradients, attention entropy). Set for the current thread
// with ScopedProbeObserver around an uncaptured pass (lingua/train/probe.h); when none is set,
// the model only reads a null pointer per call. Observers may synchronise with the GPU.
#include "lingua/core/tensor.h"

namespace lingua {

class Linear;

class ProbeObserver {
 public:
  virtual ~ProbeObserver() = default;
  // x [N, in] the input, y [N, out] the output x W^T alone (without a fused residual).
  virtual void linear_forward(const Linear& l, const Tensor& x, const Tensor& y) = 0;
  // dy [N, out]: the gradient of the output.
  virtual void linear_backward(const Linear& l, const Tensor& dy) = 0;
  // q [B, S, H, hd], k [B, S, KV, hd] after RoPE; rows [0, prefix) of each sequence carry no
  // position. `name`: the attention module's parameter prefix ("layers.3.attention").
  virtual void attention_scores(const std::string& name, const Tensor& q, const Tensor& k, int prefix) = 0;
  // Scratch memory of a tensor's size on its device, valid until the pass ends.
  virtual Tensor scratch_like(const Tensor& t) = 0;
};

// The observer of this thread (null: none).
ProbeObserver*& probe_observer();

class ScopedProbeObserver {
 public:
  explicit ScopedProbeObserver(ProbeObserver* o) : prev_(probe_observer()) { probe_observer() = o; }
  ~ScopedProbeObserver() { probe_observer() = prev_; }
  ScopedProbeObserver(const ScopedProbeObserver&) = delete;
  ScopedProbeObserver& operator=(const ScopedProbeObserver&) = delete;

 private:
  ProbeObserver* prev_;
};

}  // namespace lingua
