#include "lingua/exec/growth_ramp.h"

#include <algorithm>

#include "lingua/ops/add/add.h"
#include "lingua/ops/cast/cast.h"
#include "lingua/ops/guide_mix/guide_mix.h"
#include "lingua/ops/tail_scale/tail_scale.h"

namespace lingua {

namespace {
constexpr int kInput = 0, kGradient = 1;  // the buffers: a block's input; the input's direct gradient
}

GrowthRamp::GrowthRamp(Transformer& model, std::vector<int> layers, int64_t start, int64_t ramp_steps,
                       std::optional<ModelDims> source)
    : model_(model), ramped_(model.n_layers(), false), start_(start), ramp_steps_(ramp_steps) {
  LINGUA_CHECK(ramp_steps >= 1, "the growth ramp needs at least one step (growth.ramp_steps is ", ramp_steps, ")");
  for (int l : layers) {
    LINGUA_CHECK(l >= 0 && l < model.n_layers(), "growth ramp: layer ", l, " is not one of the model's ",
                 model.n_layers());
    ramped_[l] = true;
  }
  ParamStore& ps = model.params();
  StepScalars& sc = ps.step_scalars();
  slot_ = sc.slot("growth/one_minus_m", sizeof(float), StepScalars::Writer::host);
  masked_.resize((size_t)model.n_layers());
  if (source) {
    const ModelDims &s = *source, &t = model.dims();
    LINGUA_CHECK(s.head_dim == t.head_dim && s.dim <= t.dim && s.hidden <= t.hidden && s.n_heads <= t.n_heads,
                 "G_random's width masks: the source (dim ", s.dim, ", FFN ", s.hidden, ", ", s.n_heads, " heads of ",
                 s.head_dim, ") is not a part of the target (dim ", t.dim, ", FFN ", t.hidden, ", ", t.n_heads,
                 " heads of ", t.head_dim, ")");
    auto stage = [&](bool grew, const std::string& name) {
      if (!grew) return -1;
      stages_.push_back(name);
      stage_slot_.push_back(sc.slot("growth/m_" + name, sizeof(float), StepScalars::Writer::host));
      stage_m_.push_back(0.0);
      return (int)stages_.size() - 1;
    };
    const int ffn = stage(t.hidden > s.hidden, "ffn"), dim = stage(t.dim > s.dim, "dim"),
              heads = stage(t.n_heads > s.n_heads, "heads");
    dim_stage_ = dim;
    dim_from_ = s.dim;
    auto mask = [&](int layer, const std::string& rest, int64_t col_from, int col_stage) {
      const std::string name = "layers." + std::to_string(layer) + "." + rest;
      const int id = ps.find(name);
      LINGUA_CHECK(id >= 0 && ps.info(id).shape.size() == 2,
                   "G_random's width masks need a dense '", rest, "' in every block (layer ", layer, " has none: ",
                   "a factored FFN cannot be masked); use G_zero or G_split");
      const ParamInfo& p = ps.info(id);
      LINGUA_CHECK(p.placement.kind == Placement::whole, "G_random's width masks with FSDP: not supported ('", name,
                   "' is sharded); use distributed.fsdp_type=no_shard (DDP)");
      Masked w;
      w.id = id;
      w.row_from = dim >= 0 ? s.dim : p.shape[0];
      w.row_stage = dim;
      w.col_from = col_stage >= 0 ? col_from : p.shape[1];
      w.col_stage = col_stage;
      const int64_t R = p.shape[0], C = p.shape[1];
      if (ps.device() == Device::cuda) {
        device_views_.emplace_back((size_t)(R * C) * sizeof(uint16_t));
        w.view = Tensor(device_views_.back().data(), {R, C}, DType::bf16, Device::cuda);
      } else {
        host_views_.emplace_back((size_t)(R * C));
        w.view = Tensor(host_views_.back().data(), {R, C});
      }
      masked_[(size_t)layer].push_back(w);
    };
    for (int l = 0; l < model.n_layers(); ++l) {
      if (ffn >= 0 || dim >= 0) mask(l, "feed_forward.w2.weight", s.hidden, ffn);
      if (heads >= 0 || dim >= 0) mask(l, "attention.wo.weight", (int64_t)s.n_heads * s.head_dim, heads);
    }
  }
  set_step(start);
  for (auto& layer : masked_)
    for (Masked& w : layer) {
      mask_weights(w);  // (the staged m's: the values of the first step on the CPU, zeros on CUDA)
      ps.set_compute_view(w.id, w.view);
    }
}

GrowthRamp::~GrowthRamp() {
  for (auto& layer : masked_)
    for (Masked& w : layer) model_.params().set_compute_view(w.id, Tensor());
}

void GrowthRamp::set_step(int64_t step) {
  StepScalars& sc = model_.params().step_scalars();
  m_ = std::clamp((double)(step - start_) / (double)ramp_steps_, 0.0, 1.0);
  *sc.staged<float>(slot_) = (float)(1.0 - m_);
  for (size_t k = 0; k < stages_.size(); ++k) {
    stage_m_[k] = std::clamp((double)(step - start_ - (int64_t)k * ramp_steps_) / (double)ramp_steps_, 0.0, 1.0);
    *sc.staged<float>(stage_slot_[k]) = (float)stage_m_[k];
  }
}

double GrowthRamp::width_m(const std::string& stage) const {
  for (size_t k = 0; k < stages_.size(); ++k)
    if (stages_[k] == stage) return stage_m_[k];
  return 1.0;
}

int64_t GrowthRamp::end_step() const {
  return start_ + ramp_steps_ * std::max<int64_t>(1, (int64_t)stages_.size());
}

const float* GrowthRamp::factor(int stage) const {
  return stage < 0 ? nullptr : model_.params().step_scalars().at<float>(stage_slot_[(size_t)stage]);
}

void GrowthRamp::mask_weights(const Masked& w) {
  tail_scale(model_.params().param(w.id), w.row_from, factor(w.row_stage), w.col_from, factor(w.col_stage), w.view);
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
  // The embedding's new coordinates (block 0's input), then the block's masked weights, then (a
  // ramped block) its input kept: masked, as the block reads it. (Decoding runs the block in place
  // on x.)
  if (l == 0 && dim_stage_ >= 0) tail_scale(x, x.size(0), nullptr, dim_from_, factor(dim_stage_), x);
  for (const Masked& w : masked_[(size_t)l]) mask_weights(w);
  if (!ramped_[l]) return;
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

void GrowthRamp::after_backward(int l, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) {
  // The reverse of before_forward: the ramp's direct gradient, then the embedding's mask.
  const bool ramped = ramped_[l], embedding = l == 0 && dim_stage_ >= 0;
  if (ramped) add_into(dx, buffer(kGradient, dx));
  if (embedding) tail_scale(dx, dx.size(0), nullptr, dim_from_, factor(dim_stage_), dx);
  if ((ramped || embedding) && dx_act.data != dx.data) cast_into(dx_act, dx);
  // A masked weight's gradient: M times the gradient of W * M, once the micro-batches are summed.
  if (!ctx.last_micro_batch) return;
  for (const Masked& w : masked_[(size_t)l]) {
    const Tensor g = model_.params().grad(w.id);
    if (g.data) tail_scale(g, w.row_from, factor(w.row_stage), w.col_from, factor(w.col_stage), g);
  }
}

}  // namespace lingua
