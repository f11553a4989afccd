#include "lingua/optim/optimizer.h"

#include <cmath>

#include "lingua/core/profiler.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/op_checks.h"
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
      groups_.push_back({g, c.lr, c.weight_decay, c.beta1, c.beta2, c.epsilon, c.clip, {}, {}, Tensor()});
    }
    groups_[index[g]].params.push_back(i);
  }
  for (auto& g : groups_)
    for (int i : g.params) {
      const ParamInfo& p = store.info(i);
      ParamGroup::Span* last = g.spans.empty() ? nullptr : &g.spans.back();
      const bool joins = last && last->offset + last->numel == p.offset &&
                         ((last->bf16_offset < 0 && p.bf16_offset < 0) ||
                          (last->bf16_offset >= 0 && last->bf16_offset + last->numel == p.bf16_offset));
      if (joins)
        last->numel += p.numel;
      else
        g.spans.push_back({p.offset, p.numel, p.bf16_offset});
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
    const bool sparse = is_given(g.sparse_rows);
    if (cuda && sparse) {
      // Per parameter: the norm over the marked rows, then the update of those rows only.
      GroupStats* st = dstats_.as<GroupStats>() + gi;
      for (size_t k = 0; k < g.params.size(); ++k)
        sum_squares_rows_device(store_.grad(g.params[k]), g.sparse_rows, &st->sq, k > 0);
      clip_coefficient_device(&st->sq, g.clip, &st->coef, &st->norm);
      h.grad_scale_device = &st->coef;
      h.step_device = dscalars_.as<AdamWStepScalars>() + gi;
      for (int i : g.params)
        adamw_update_rows(store_.param(i), store_.grad(i), m(i), v(i), g.sparse_rows, h, store_.bf16_copy(i));
    } else if (cuda) {
      // One fused pass per span: the norm in a fixed order, the coefficient and the update
      // (with the bf16 copy) read from device memory; no host round trip.
      GroupStats* st = dstats_.as<GroupStats>() + gi;
      for (size_t k = 0; k < g.spans.size(); ++k)
        sum_squares_device(flat(store_.device_grads(), g.spans[k].offset, g.spans[k].numel, DType::f32), &st->sq,
                           k > 0);
      clip_coefficient_device(&st->sq, g.clip, &st->coef, &st->norm);
      h.grad_scale_device = &st->coef;
      h.step_device = dscalars_.as<AdamWStepScalars>() + gi;
      for (const ParamGroup::Span& sp : g.spans) {
        const int64_t off = sp.offset, n = sp.numel;
        adamw_update(flat(store_.device_params(), off, n, DType::f32), flat(store_.device_grads(), off, n, DType::f32),
                     flat(dm_.data(), off, n, DType::f32), flat(dv_.data(), off, n, DType::f32), h,
                     sp.bf16_offset < 0 ? Tensor()
                                        : flat(store_.device_params_bf16(), sp.bf16_offset, n, DType::bf16));
      }
    } else if (sparse) {
      double sq = 0;
      for (int i : g.params) sq += sum_squares_rows(store_.grad(i), g.sparse_rows);  // fixed order
      const double norm = std::sqrt(sq);
      h.grad_scale = clip_coefficient(norm, g.clip);
      for (int i : g.params) adamw_update_rows(store_.param(i), store_.grad(i), m(i), v(i), g.sparse_rows, h);
      norms_[g.name] = norm;
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

void AdamW::set_sparse_rows(const std::string& group, const Tensor& rows_mask) {
  for (ParamGroup& g : groups_) {
    if (g.name != group) continue;
    LINGUA_CHECK(rows_mask.dtype == DType::i32 && rows_mask.ndim == 1 && rows_mask.device == store_.device(),
                 "internal error: row mask of group '", group, "' must be [rows] i32 on the store's device, got ",
                 rows_mask.str());
    for (int i : g.params) {
      const ParamInfo& p = store_.info(i);
      LINGUA_CHECK(p.shape.size() == 2 && p.shape[0] == rows_mask.size(0), "row-sparse AdamW: parameter '", p.name,
                   "' of group '", group, "' is not a table of ", rows_mask.size(0), " rows");
    }
    g.sparse_rows = rows_mask;
    return;
  }
  fail("row-sparse AdamW: the model has no parameter group '", group, "'");
}

bool AdamW::has_group(const std::string& name) const {
  for (const ParamGroup& g : groups_)
    if (g.name == name) return true;
  return false;
}

std::map<std::string, OptimConfig> group_overrides(const OptimConfig& cfg) {
  OptimConfig s = cfg;
  const StemOptimConfig& o = cfg.stem;
  s.lr = o.lr.value_or(cfg.lr);
  s.weight_decay = o.weight_decay.value_or(cfg.weight_decay);
  s.epsilon = o.epsilon.value_or(cfg.epsilon);
  s.beta1 = o.beta1.value_or(cfg.beta1);
  s.beta2 = o.beta2.value_or(cfg.beta2);
  s.clip = o.clip.value_or(cfg.clip);
  return {{kStemGroup, s}};
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
