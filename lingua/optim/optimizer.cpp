#include "lingua/optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "lingua/core/profiler.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

Tensor flat(float* base, int64_t off, int64_t n, Device dev) { return Tensor(base + off, {n}, DType::f32, dev); }

}  // namespace

AdamW::AdamW(ParamStore& store, const OptimConfig& cfg) : store_(store), cfg_(cfg) { follow_layout(); }

void AdamW::build_groups() {
  groups_.clear();
  std::map<std::string, int> index;
  for (int id : store_.ids()) {
    const ParamInfo& p = store_.info(id);
    if (p.grad_offset < 0) continue;  // frozen: no optimizer state
    if (!index.count(p.group)) {
      ParamGroup g;
      g.name = p.group;
      if (p.group == "default") {
        g.hyper = default_group_hyper(cfg_);
      } else {
        const OptimGroupSpec* spec = store_.group_spec(p.group);
        LINGUA_CHECK(spec, "internal error: optimizer group '", p.group, "' was not declared");
        g.hyper = spec->resolve(cfg_);
      }
      StepScalars& sc = store_.step_scalars();
      g.step_slot = sc.slot("adamw." + g.name + ".step", sizeof(AdamWStepScalars), StepScalars::Writer::host);
      g.stats_slot = sc.slot("adamw." + g.name + ".stats", sizeof(GroupStats), StepScalars::Writer::device);
      index[p.group] = (int)groups_.size();
      groups_.push_back(std::move(g));
    }
    groups_[index[p.group]].params.push_back(id);
  }
  // Segments. Row-sparse: one per table. Dense: one per parameter on the CPU (the norm summed per
  // parameter, a fixed order); on CUDA runs of parameters adjacent in every buffer, one kernel each.
  const bool merge = store_.device() == Device::cuda;
  int64_t rows = -1;
  for (ParamGroup& g : groups_)
    for (int id : g.params) {
      const ParamInfo& p = store_.info(id);
      if (g.hyper.rows_by_input_ids) {
        LINGUA_CHECK(p.local_shape.size() == 2 && (rows < 0 || p.local_shape[0] == rows), "row-sparse AdamW: parameter '",
                     p.name, "' of group '", g.name, "' is not a table of ", rows < 0 ? p.local_shape[0] : rows,
                     " rows indexed by input ids");
        rows = p.local_shape[0];
        LINGUA_CHECK(p.placement.kind != Placement::flat_shard, "row-sparse AdamW: table '", p.name,
                     "' is split in flat shards (row-sparse updates need whole rows: split tables by columns)");
        g.segments.push_back({p.offset, p.grad_offset, p.numel, p.bf16_offset, id,
                              p.placement.kind != Placement::whole, (int)p.placement.kind});
        continue;
      }
      const bool split = p.placement.kind != Placement::whole;
      ParamGroup::Segment* last = g.segments.empty() ? nullptr : &g.segments.back();
      const bool joins = merge && last && last->split == split && last->split_kind == (int)p.placement.kind && last->offset + last->numel == p.offset &&
                         last->grad_offset + last->numel == p.grad_offset &&
                         ((last->bf16_offset < 0 && p.bf16_offset < 0) ||
                          (last->bf16_offset >= 0 && last->bf16_offset + last->numel == p.bf16_offset));
      if (joins)
        last->numel += p.numel;
      else
        g.segments.push_back({p.offset, p.grad_offset, p.numel, p.bf16_offset, -1, split, (int)p.placement.kind});
    }
  // Split parameters' segments first: their partial norm is summed over the processes before the
  // whole parameters' part (the same on every process) is added (see apply()).
  for (ParamGroup& g : groups_)
    std::stable_partition(g.segments.begin(), g.segments.end(), [](const ParamGroup::Segment& s) { return s.split; });
  for (const ParamGroup& g : groups_)
    for (const ParamGroup::Segment& s : g.segments)
      LINGUA_CHECK(!s.split || s.split_kind == g.segments.front().split_kind, "optimizer group '", g.name,
                   "' has parameters split over processes in two ways (flat shards and column slices): their norms "
                   "would be summed over different process groups");
  if (rows >= 0 && rows_.numel() != rows) {
    if (store_.device() == Device::cuda) {
      rows_dev_ = DeviceBuffer(rows * sizeof(int32_t));
      rows_dev_.zero();
      rows_ = Tensor(rows_dev_.data(), {rows}, DType::i32, Device::cuda);
    } else {
      rows_host_.assign(rows, 0);
      rows_ = Tensor(rows_host_.data(), {rows}, DType::i32, Device::cpu);
    }
  } else if (rows < 0) {
    rows_ = Tensor();
  }
}

float* AdamW::moment_base(int which) const {
  if (store_.device() == Device::cuda) return (which == 0 ? dm_ : dv_).as<float>();
  return const_cast<float*>((which == 0 ? host_m_ : host_v_).data());
}

void AdamW::follow_layout() {
  const bool cuda = store_.device() == Device::cuda;
  const int64_t n = store_.grad_total();
  std::vector<float> hm(cuda ? 0 : n, 0.0f), hv(cuda ? 0 : n, 0.0f);
  DeviceBuffer dm, dv;
  if (cuda) {
    dm = DeviceBuffer(std::max<int64_t>(n, 1) * sizeof(float));
    dv = DeviceBuffer(std::max<int64_t>(n, 1) * sizeof(float));
    dm.zero();
    dv.zero();
  }
  // Moments of parameters that survive the new layout move there by name; new ones start at zero.
  std::map<std::string, std::pair<int64_t, int64_t>> at;
  for (int id : store_.ids()) {
    const ParamInfo& p = store_.info(id);
    if (p.grad_offset < 0) continue;
    at[p.name] = {p.grad_offset, p.numel};
    auto old = moment_at_.find(p.name);
    if (old == moment_at_.end() || old->second.second != p.numel) continue;
    const int64_t from = old->second.first, to = p.grad_offset;
    if (cuda) {
      copy_device_to_device(dm.as<float>() + to, dm_.as<float>() + from, p.numel * sizeof(float));
      copy_device_to_device(dv.as<float>() + to, dv_.as<float>() + from, p.numel * sizeof(float));
    } else {
      std::copy(host_m_.begin() + from, host_m_.begin() + from + p.numel, hm.begin() + to);
      std::copy(host_v_.begin() + from, host_v_.begin() + from + p.numel, hv.begin() + to);
    }
  }
  dm_ = std::move(dm);
  dv_ = std::move(dv);
  host_m_ = std::move(hm);
  host_v_ = std::move(hv);
  moment_at_ = std::move(at);
  layout_epoch_ = store_.layout_epoch();
  build_groups();
}

const AdamW& AdamW::sync() const {
  if (store_.layout_epoch() != layout_epoch_) const_cast<AdamW*>(this)->follow_layout();
  return *this;
}

void AdamW::observe_input_ids(const Tensor& ids, bool first) {
  if (!row_sparse()) return;
  if (first) {
    if (store_.device() == Device::cuda) cuda_memset_zero(rows_.data, rows_.nbytes());
    else std::fill(rows_host_.begin(), rows_host_.end(), 0);
  }
  mark_rows(ids, rows_);
}

StepReport AdamW::step(double lr_mult) {
  StepReport r = prepare(lr_mult);
  apply();
  return r;
}

StepReport AdamW::prepare(double lr_mult) {
  sync();
  ++t_;
  StepReport r;
  StepScalars& sc = store_.step_scalars();
  for (const ParamGroup& g : groups_) {
    const double lr = g.hyper.lr * lr_mult;
    const AdamWHyper h{(float)lr, (float)g.hyper.beta1, (float)g.hyper.beta2, (float)g.hyper.eps,
                       (float)g.hyper.weight_decay, t_};
    *sc.staged<AdamWStepScalars>(g.step_slot) = adamw_step_scalars(h);
    r.lr[g.name] = lr;
  }
  sc.upload();
  return r;
}

void AdamW::apply() {
  LINGUA_PROFILE_SCOPE("optimizer");
  LINGUA_CHECK(t_ > 0 && layout_epoch_ == store_.layout_epoch(), "internal error: AdamW::apply without prepare");
  const Device dev = store_.device();
  StepScalars& sc = store_.step_scalars();
  float* params = store_.params_data();
  float* grads = store_.grads_data();
  void* bf16 = store_.bf16_data();
  store_.values_written();
  // Every group's norm first: a non-finite gradient anywhere skips the whole step (on the device).
  std::vector<const double*> sqs;
  std::vector<float*> coefs;
  for (const ParamGroup& g : groups_) {
    GroupStats* st = sc.at<GroupStats>(g.stats_slot);
    for (size_t k = 0; k < g.segments.size(); ++k) {
      const ParamGroup::Segment& s = g.segments[k];
      // The split parameters' part (they come first) summed over the processes, then the rest.
      if (k > 0 && g.segments[k - 1].split && !s.split) split_norm_reducer_[g.segments[k - 1].split_kind](&st->sq);
      if (s.table >= 0) sum_squares_rows_device(store_.local_grad(s.table), rows_, &st->sq, k > 0);
      else sum_squares_device(flat(grads, s.grad_offset, s.numel, dev), &st->sq, k > 0);
    }
    if (!g.segments.empty() && g.segments.back().split) split_norm_reducer_[g.segments.back().split_kind](&st->sq);
    clip_coefficient_device(dev, &st->sq, g.hyper.clip, &st->coef, &st->norm);
    sqs.push_back(&st->sq);
    coefs.push_back(&st->coef);
  }
  skip_step_if_nonfinite_device(dev, sqs.data(), coefs.data(), (int)groups_.size());
  for (const ParamGroup& g : groups_) {
    GroupStats* st = sc.at<GroupStats>(g.stats_slot);
    AdamWHyper h{(float)g.hyper.lr, (float)g.hyper.beta1, (float)g.hyper.beta2, (float)g.hyper.eps,
                 (float)g.hyper.weight_decay, t_};
    h.grad_scale_device = &st->coef;
    h.step_device = sc.at<AdamWStepScalars>(g.step_slot);
    for (const ParamGroup::Segment& s : g.segments) {
      if (s.table >= 0) {
        adamw_update_rows(store_.local_param(s.table), store_.local_grad(s.table), m(s.table), v(s.table), rows_, h,
                          store_.local_bf16(s.table));
        continue;
      }
      const Tensor copy = s.bf16_offset < 0 || dev != Device::cuda
                              ? Tensor()
                              : Tensor(static_cast<uint16_t*>(bf16) + s.bf16_offset, {s.numel}, DType::bf16, dev);
      adamw_update(flat(params, s.offset, s.numel, dev), flat(grads, s.grad_offset, s.numel, dev),
                   flat(moment_base(0), s.grad_offset, s.numel, dev), flat(moment_base(1), s.grad_offset, s.numel, dev),
                   h, copy);
    }
  }
}

std::map<std::string, double> AdamW::last_grad_norms() const {
  std::map<std::string, double> out;
  for (const ParamGroup& g : groups()) {
    GroupStats st{};
    store_.step_scalars().read(g.stats_slot, &st, sizeof st);
    out[g.name] = st.norm;
  }
  return out;
}

bool AdamW::has_group(const std::string& name) const {
  for (const ParamGroup& g : groups())
    if (g.name == name) return true;
  return false;
}

Tensor AdamW::moment(int which, int id) const {
  sync();
  const ParamInfo& p = store_.info(id);
  LINGUA_CHECK(p.grad_offset >= 0, "internal error: parameter '", p.name, "' is frozen: it has no moments");
  Tensor t = store_.local_param(id);
  t.data = moment_base(which) + p.grad_offset;
  return t;
}
Tensor AdamW::m(int id) const { return moment(0, id); }
Tensor AdamW::v(int id) const { return moment(1, id); }

std::vector<float> AdamW::host_moment(int which, int id) const {
  const Tensor t = moment(which, id);
  std::vector<float> h(t.numel());
  copy_tensor(Tensor(h.data(), {t.numel()}), Tensor(t.data, {t.numel()}, DType::f32, t.device));
  return h;
}
std::vector<float> AdamW::host_m(int id) const { return host_moment(0, id); }
std::vector<float> AdamW::host_v(int id) const { return host_moment(1, id); }

void AdamW::set_moments(int id, const float* mh, const float* vh) {
  for (int which = 0; which < 2; ++which) {
    const Tensor t = moment(which, id);
    copy_tensor(Tensor(t.data, {t.numel()}, DType::f32, t.device), Tensor(which == 0 ? mh : vh, {t.numel()}));
  }
}

}  // namespace lingua
