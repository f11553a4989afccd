#include "lingua/optim/optimizer.h"

#include <cmath>

#include "lingua/core/profiler.h"
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
      groups_.push_back({g, c.lr, c.weight_decay, c.beta1, c.beta2, c.epsilon, c.clip, {}, {}});
    }
    groups_[index[g]].params.push_back(i);
  }
  for (auto& g : groups_)
    for (int i : g.params) {
      const ParamInfo& p = store.info(i);
      if (!g.spans.empty() && g.spans.back().first + g.spans.back().second == p.offset)
        g.spans.back().second += p.numel;
      else
        g.spans.push_back({p.offset, p.numel});
    }
  if (store.device() == Device::cuda) {
    dm_ = DeviceBuffer(store.total() * sizeof(float));
    dv_ = DeviceBuffer(store.total() * sizeof(float));
    dm_.zero();
    dv_.zero();
    dstats_ = DeviceBuffer(groups_.size() * sizeof(GroupStats));
    dstats_.zero();
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
  StepReport r = prepare(lr_mult);
  apply();
  return r;
}

StepReport AdamW::prepare(double lr_mult) {
  ++t_;
  StepReport r;
  const bool cuda = store_.device() == Device::cuda;
  hyper_.clear();
  scalars_.clear();
  for (const ParamGroup& g : groups_) {
    const double lr = g.lr * lr_mult;
    hyper_.push_back({(float)lr, (float)g.beta1, (float)g.beta2, (float)g.eps, (float)g.weight_decay, t_, 1.0f});
    if (cuda) scalars_.push_back(adamw_step_scalars(hyper_.back()));
    r.lr[g.name] = lr;
  }
  if (cuda) {
    if (!dscalars_.data()) dscalars_ = DeviceBuffer(groups_.size() * sizeof(AdamWStepScalars));
    copy_to_device_async(dscalars_.data(), scalars_.data(), scalars_.size() * sizeof(AdamWStepScalars));
  }
  return r;
}

void AdamW::apply() {
  LINGUA_PROFILE_SCOPE("optimizer");
  LINGUA_CHECK(hyper_.size() == groups_.size(), "internal error: AdamW::apply without prepare");
  const bool cuda = store_.device() == Device::cuda;
  auto flat = [](void* base, int64_t off, int64_t n, DType dt) {
    return Tensor(static_cast<char*>(base) + off * (int64_t)dtype_size(dt), {n}, dt, Device::cuda);
  };
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    AdamWHyper h = hyper_[gi];
    if (cuda) {
      // One fused pass per span: the norm in a fixed order, the coefficient and the update
      // (with the bf16 copy) read from device memory; no host round trip.
      GroupStats* st = dstats_.as<GroupStats>() + gi;
      for (size_t k = 0; k < g.spans.size(); ++k)
        sum_squares_device(flat(store_.device_grads(), g.spans[k].first, g.spans[k].second, DType::f32), &st->sq,
                           k > 0);
      clip_coefficient_device(&st->sq, g.clip, &st->coef, &st->norm);
      h.grad_scale_device = &st->coef;
      h.step_device = dscalars_.as<AdamWStepScalars>() + gi;
      for (auto [off, n] : g.spans)
        adamw_update(flat(store_.device_params(), off, n, DType::f32), flat(store_.device_grads(), off, n, DType::f32),
                     flat(dm_.data(), off, n, DType::f32), flat(dv_.data(), off, n, DType::f32), h,
                     flat(store_.device_params_bf16(), off, n, DType::bf16));
    } else {
      double sq = 0;
      for (int i : g.params) {  // fixed order: deterministic
        Tensor gr = store_.grad(i);
        sq += sum_squares(Tensor(gr.data, {gr.numel()}, DType::f32, gr.device));
      }
      const double norm = std::sqrt(sq);
      h.grad_scale = clip_coefficient(norm, g.clip);
      for (int i : g.params) {
        const int64_t n = store_.info(i).numel;
        auto view = [n](const Tensor& t) { return Tensor(t.data, {n}, t.dtype, t.device); };
        adamw_update(view(store_.param(i)), view(store_.grad(i)), view(m(i)), view(v(i)), h);
      }
      norms_[g.name] = norm;
    }
  }
}

std::map<std::string, double> AdamW::last_grad_norms() const {
  if (store_.device() != Device::cuda) return norms_;
  std::vector<GroupStats> st(groups_.size());
  copy_to_host(st.data(), dstats_.data(), st.size() * sizeof(GroupStats));
  std::map<std::string, double> out;
  for (size_t gi = 0; gi < groups_.size(); ++gi) out[groups_[gi].name] = st[gi].norm;
  return out;
}

}  // namespace lingua
