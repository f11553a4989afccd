#include "lingua/exec/growth_ramp.h"

#include <algorithm>

#include "lingua/ops/add/add.h"
#include "lingua/ops/cast/cast.h"
#include "lingua/ops/guide_mix/guide_mix.h"

namespace lingua {

namespace {
constexpr int kInput = 0, kGradient = 1;  // the buffers: a block's input; the input's direct gradient
}

GrowthRamp::GrowthRamp(Transformer& model, std::vector<int> layers, int64_t start, int64_t ramp_steps)
    : model_(model), ramped_(model.n_layers(), false), start_(start), ramp_steps_(ramp_steps) {
  LINGUA_CHECK(ramp_steps >= 1, "the growth ramp needs at least one step (growth.ramp_steps is ", ramp_steps, ")");
  for (int l : layers) {
    LINGUA_CHECK(l >= 0 && l < model.n_layers(), "growth ramp: layer ", l, " is not one of the model's ",
                 model.n_layers());
    ramped_[l] = true;
  }
  slot_ = model.params().step_scalars().slot("growth/one_minus_m", sizeof(float), StepScalars::Writer::host);
  set_step(start);
}

void GrowthRamp::set_step(int64_t step) {
  m_ = std::clamp((double)(step - start_) / (double)ramp_steps_, 0.0, 1.0);
  *model_.params().step_scalars().staged<float>(slot_) = (float)(1.0 - m_);
}

Tensor GrowthRamp::buffer(int use, const Tensor& like) {
  const int64_t n = like.numel();
  const std::pair<int, int64_t> key{use, n};
  void* p;
  if (like.device == Device::cuda) {
    DeviceBuffer& b = device_[key];
    if (!b.data()) b = DeviceBuffer((size_t)n * sizeof(float));
    p = b.data();
  } else {
    std::vector<float>& b = host_[key];
    b.resize((size_t)n);
    p = b.data();
  }
  return Tensor(p, {like.size(0), like.size(1)}, DType::f32, like.device);
}

void GrowthRamp::before_forward(int l, const Tensor& x, const StepContext&) {
  if (!ramped_[l]) return;
  // (Decoding runs the block in place on x: its input is kept here.)
  const Tensor keep = buffer(kInput, x);
  cast_into(keep, x);
}

void GrowthRamp::after_forward(int l, const Tensor& y, const StepContext&) {
  if (!ramped_[l]) return;
  const float* one_minus_m = model_.params().step_scalars().at<float>(slot_);
  guide_mix_forward(y, buffer(kInput, y), one_minus_m, y);  // y = (1 - m) x + m y
}

void GrowthRamp::before_backward(int l, const Tensor& dy, const Tensor& dy_act, const StepContext&) {
  if (!ramped_[l]) return;
  const float* one_minus_m = model_.params().step_scalars().at<float>(slot_);
  // The block's output gradient m dy' (in place), the input's direct part (1 - m) dy' kept.
  guide_mix_backward(dy, one_minus_m, dy, buffer(kGradient, dy));
  if (dy_act.data != dy.data) cast_into(dy_act, dy);
}

void GrowthRamp::after_backward(int l, const Tensor& dx, const Tensor& dx_act, const StepContext&) {
  if (!ramped_[l]) return;
  add_into(dx, buffer(kGradient, dx));
  if (dx_act.data != dx.data) cast_into(dx_act, dx);
}

}  // namespace lingua
