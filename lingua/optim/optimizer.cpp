#include "lingua/optim/optimizer.h"

#include <cmath>

#include "lingua/ops/adamw/adamw.h"

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
}

Tensor AdamW::m(int i) const {
  Tensor t = store_.param(i);
  t.data = m_.data() + store_.info(i).offset;
  return t;
}

Tensor AdamW::v(int i) const {
  Tensor t = store_.param(i);
  t.data = v_.data() + store_.info(i).offset;
  return t;
}

StepReport AdamW::step(double lr_mult) {
  ++t_;
  StepReport r;
  for (auto& g : groups_) {
    double sq = 0;
    for (int i : g.params) {  // fixed order: deterministic
      Tensor gr = store_.grad(i);
      sq += sum_squares(Tensor(gr.data, {gr.numel()}));
    }
    double norm = std::sqrt(sq);
    float scale = clip_coefficient(norm, g.clip);
    double lr = g.lr * lr_mult;
    AdamWHyper h{(float)lr, (float)g.beta1, (float)g.beta2, (float)g.eps, (float)g.weight_decay, t_, scale};
    for (int i : g.params) {
      Tensor p = store_.param(i), gr = store_.grad(i);
      Tensor flat_p(p.data, {p.numel()}), flat_g(gr.data, {p.numel()});
      Tensor mm = m(i), vv = v(i);
      adamw_update(flat_p, flat_g, Tensor(mm.data, {p.numel()}), Tensor(vv.data, {p.numel()}), h);
    }
    r.grad_norm[g.name] = norm;
    r.lr[g.name] = lr;
  }
  return r;
}

}  // namespace lingua
