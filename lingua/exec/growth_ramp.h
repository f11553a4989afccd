#pragma once
// G_random's ramp (SPEC §5): the new blocks of a model grown in depth with random weights enter the
// residual stream gradually. A hook on the executor (hooks.h) makes each ramped block l output
//   y' = m f(x) + (1 - m) x           (f: the block, x its input; m the same for every ramped block)
// and back-propagates through it (the block's output gradient m dy', its input's (1 - m) dy' plus
// the block's). m = min(1, (step - start) / ramp_steps) for optimizer step `step` (0-based), so
// m = 0 computes the source model's function and the grown model's first step is the source's.
// m lives in a StepScalars slot: a step captured as a CUDA graph reads each step's value. It acts
// in training, evaluation and decoding alike (the trainer's validation sees the ramp); a checkpoint
// loaded by another command runs its blocks whole (m = 1).
#include <cstdint>
#include <map>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/exec/hooks.h"
#include "lingua/model/transformer.h"

namespace lingua {

class GrowthRamp : public LayerHooks {
 public:
  // layers: the ramped (new) blocks; ramp_steps >= 1 optimizer steps from `start` to m = 1.
  GrowthRamp(Transformer& model, std::vector<int> layers, int64_t start, int64_t ramp_steps);
  // Stages m for optimizer step `step` (Transformer::begin_step uploads it).
  void set_step(int64_t step);
  double m() const { return m_; }

  void before_forward(int layer, const Tensor& x, const StepContext& ctx) override;
  void after_forward(int layer, const Tensor& y, const StepContext& ctx) override;
  void before_backward(int layer, const Tensor& dy, const Tensor& dy_act, const StepContext& ctx) override;
  void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) override;

 private:
  // A [rows, dim] f32 buffer, one per size and use, kept for the hook's life (a captured graph
  // points at it).
  Tensor buffer(int use, const Tensor& like);
  Transformer& model_;
  std::vector<bool> ramped_;
  int64_t start_, ramp_steps_;
  double m_ = 0;
  size_t slot_;  // float: 1 - m (guide_mix's alpha weighs the block's input)
  std::map<std::pair<int, int64_t>, std::vector<float>> host_;
  std::map<std::pair<int, int64_t>, DeviceBuffer> device_;
};

}  // namespace lingua
