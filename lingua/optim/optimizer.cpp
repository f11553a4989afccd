#include "lingua/optim/optimizer.h"

#include <cmath>

#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/cast/cast.h"

namespace lingua {

AdamW::AdamW(ParamStore& store, const OptimConfig& cfg, const std::map<std::string, OptimConfig>& overrides)
    : store_(store), m_(store.total(), 0.0f), v_(store.total(), 0.0f) {
  std::map<std::string, int> index;
  for (int i = 0; i < store.size(); ++i) {
    const std::string& g = store.info(i).group;
    if (!index.count(g)) {
      auto it = overrides.find(g);
      const OptimConfig& c = it == overrides.end() ? cfg : it->second;
      index[g] = (int)groups_.size();
      groups_.push_back({g, c.lr, c.weight_decay, c.beta1, c.beta2, c.epsilon, c.clip, {}});
    }
    groups_[index[g]].params.push_back(i);
  }
  if (store.device() == Device::cuda) {
    dm_ = DeviceBuffer(store.total() * sizeof(float));
    dv_ = DeviceBuffer(store.total() * sizeof(float));
    dm_.zero();
    dv_.zero();
  }
}

Tensor AdamW::view(void* base, int i, Device dev) const {
  Tensor t = store_.host_param(i);
  t.data = static_cast<float*>(base) + store_.info(i).offset;
  t.device = dev;
  return t;
}
Tensor AdamW::m(int i) const { return dm_.data() ? view(dm_.data(), i, Device::cuda) : host_m(i); }
Tensor AdamW::v(int i) const { return dv_.data() ? view(dv_.data(), i, Device::cuda) : host_v(i); }
Tensor AdamW::host_m(int i) const { return view(m_.data(), i, Device::cpu); }
Tensor AdamW::host_v(int i) const { return view(v_.data(), i, Device::cpu); }

void AdamW::download() const {
  if (!dm_.data()) return;
  copy_to_host(m_.data(), dm_.data(), m_.size() * sizeof(float));
  copy_to_host(v_.data(), dv_.data(), v_.size() * sizeof(float));
}

void AdamW::upload() {
  if (!dm_.data()) return;
  copy_to_device(dm_.data(), m_.data(), m_.size() * sizeof(float));
  copy_to_device(dv_.data(), v_.data(), v_.size() * sizeof(float));
}

StepReport AdamW::step(double lr_mult) {
  ++t_;
  StepReport r;
  for (auto& g : groups_) {
    double sq = 0;
    for (int i : g.params) {  // fixed order: deterministic
      Tensor gr = store_.grad(i);
      sq += sum_squares(Tensor(gr.data, {gr.numel()}, DType::f32, gr.device));
    }
    double norm = std::sqrt(sq);
    float scale = clip_coefficient(norm, g.clip);
    double lr = g.lr * lr_mult;
    AdamWHyper h{(float)lr, (float)g.beta1, (float)g.beta2, (float)g.eps, (float)g.weight_decay, t_, scale};
    for (int i : g.params) {
      int64_t n = store_.info(i).numel;
      auto flat = [n](const Tensor& t) { return Tensor(t.data, {n}, t.dtype, t.device); };
      adamw_update(flat(store_.param(i)), flat(store_.grad(i)), flat(m(i)), flat(v(i)), h);
      // The bf16 copy the matmuls read (CUDA) follows the master weights.
      if (store_.compute_param(i).dtype != DType::f32)
        cast_into(flat(store_.compute_param(i)), flat(store_.param(i)));
    }
    r.grad_norm[g.name] = norm;
    r.lr[g.name] = lr;
  }
  return r;
}

}  // namespace lingua
