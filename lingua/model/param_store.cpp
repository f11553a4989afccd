#include "lingua/model/param_store.h"

#include <algorithm>
#include <cstring>

#include "lingua/core/bf16.h"
#include "lingua/core/philox.h"

namespace lingua {

uint32_t name_stream_id(const std::string& name) {
  uint32_t h = 2166136261u;
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return h;
}

namespace {

int64_t padded(int64_t n) { return (n + 15) & ~int64_t(15); }  // 64-byte alignment of every parameter

int64_t product(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

template <class Draw>
ParamInit philox_init(std::string what, Draw draw) {
  ParamInit in;
  in.what = std::move(what);
  in.fill = [draw](uint64_t seed, const ParamInfo& p, float* w) {
    const uint32_t stream = name_stream_id(p.name);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < p.numel; ++i) {
      const int64_t g = p.global_index(i);
      w[i] = g < 0 ? 0.0f : draw(seed, stream, (uint64_t)g);
    }
  };
  return in;
}

}  // namespace

ParamInit ParamInit::trunc_normal(float std) {
  return philox_init("trunc_normal(" + std::to_string(std) + ")",
                     [std](uint64_t seed, uint32_t st, uint64_t i) { return philox_trunc_normal(seed, st, i, std); });
}

ParamInit ParamInit::normal(float std) {
  return philox_init("normal(" + std::to_string(std) + ")",
                     [std](uint64_t seed, uint32_t st, uint64_t i) { return philox_normal(seed, st, i, std); });
}

ParamInit ParamInit::constant(float value) {
  ParamInit in;
  in.what = "constant(" + std::to_string(value) + ")";
  in.fill = [value](uint64_t, const ParamInfo& p, float* w) {
    for (int64_t i = 0; i < p.numel; ++i) w[i] = p.global_index(i) < 0 ? 0.0f : value;
  };
  return in;
}

OptimGroupHyper default_group_hyper(const OptimConfig& c) {
  return {c.lr, c.weight_decay, c.beta1, c.beta2, c.epsilon, c.clip, false};
}

int64_t ParamInfo::full_numel() const { return product(shape); }

std::vector<float> ParamInfo::held_part(const std::vector<float>& full) const {
  if (placement.kind == Placement::whole) return full;
  std::vector<float> out((size_t)numel, 0.0f);
  for (int64_t i = 0; i < numel; ++i)
    if (const int64_t g = global_index(i); g >= 0) out[(size_t)i] = full[(size_t)g];
  return out;
}

int64_t ParamInfo::global_index(int64_t i) const {
  switch (placement.kind) {
    case Placement::whole: return i;
    case Placement::flat_shard: {
      const int64_t g = placement.rank * numel + i;
      return g < full_numel() ? g : -1;
    }
    case Placement::column_slice: {
      const int64_t c = local_shape.back(), C = shape.back();
      return (i / c) * C + placement.rank * c + i % c;
    }
  }
  return i;
}

ParamStore::ParamStore() = default;
ParamStore::~ParamStore() = default;

int ParamStore::add(ParamSpec spec, int after) {
  LINGUA_CHECK(!by_name_.count(spec.name), "internal error: parameter '", spec.name, "' declared twice");
  LINGUA_CHECK(spec.axes.empty() || spec.axes.size() == spec.shape.size(), "internal error: parameter '", spec.name,
               "' has ", spec.shape.size(), " axes but ", spec.axes.size(), " axis roles");
  LINGUA_CHECK(spec.init.fill, "internal error: parameter '", spec.name, "' has no init");
  LINGUA_CHECK(spec.group == "default" || groups_.count(spec.group), "internal error: parameter '", spec.name,
               "' is in optimizer group '", spec.group, "', which no module declared");
  const Placement pl = spec.placement;
  LINGUA_CHECK(after < 0 || std::find(order_.begin(), order_.end(), after) != order_.end(), "internal error: parameter '",
               spec.name, "' added after unknown id ", after);
  LINGUA_CHECK(pl.size >= 1 && pl.rank >= 0 && pl.rank < pl.size, "internal error: parameter '", spec.name,
               "': rank ", pl.rank, " of a group of ", pl.size);
  ParamInfo p;
  static_cast<ParamSpec&>(p) = std::move(spec);
  full_views_.emplace_back();
  switch (pl.kind) {
    case Placement::whole: p.local_shape = p.shape; break;
    case Placement::flat_shard: p.local_shape = {(p.full_numel() + pl.size - 1) / pl.size}; break;
    case Placement::column_slice:
      LINGUA_CHECK(!p.shape.empty() && p.shape.back() % pl.size == 0, "parameter '", p.name, "' of shape ",
                   shape_str(p.shape), ": its last axis does not split into ", pl.size, " equal column slices");
      p.local_shape = p.shape;
      p.local_shape.back() /= pl.size;
      break;
  }
  LINGUA_CHECK((int)p.local_shape.size() <= kMaxDims, "internal error: parameter '", p.name, "' has too many axes");
  p.numel = product(p.local_shape);
  const int id = (int)infos_.size();
  by_name_[p.name] = id;
  infos_.push_back(std::move(p));
  removed_.push_back(false);
  if (after < 0) order_.push_back(id);
  else order_.insert(std::find(order_.begin(), order_.end(), after) + 1, id);
  if (final_) {
    relayout(id);
    init_param(id, seed_);
  }
  return id;
}

void ParamStore::remove(int id) {
  LINGUA_CHECK(final_, "internal error: remove() before finalize()");
  const ParamInfo& p = info(id);
  by_name_.erase(p.name);
  removed_[id] = true;
  order_.erase(std::find(order_.begin(), order_.end(), id));
  relayout();
}

void ParamStore::set_trainable(int id, bool trainable) {
  info(id);  // checks the id
  if (infos_[id].trainable == trainable) return;
  infos_[id].trainable = trainable;
  if (final_) relayout();
}

void ParamStore::declare_group(OptimGroupSpec spec) {
  LINGUA_CHECK(spec.name != "default" && !spec.name.empty(), "internal error: optimizer group name '", spec.name,
               "' is reserved");
  groups_[spec.name] = std::move(spec);
}

const OptimGroupSpec* ParamStore::group_spec(const std::string& name) const {
  auto it = groups_.find(name);
  return it == groups_.end() ? nullptr : &it->second;
}

const ParamInfo& ParamStore::info(int id) const {
  LINGUA_CHECK(id >= 0 && id < (int)infos_.size() && !removed_[id], "internal error: no parameter with id ", id);
  return infos_[id];
}

int ParamStore::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

int ParamStore::index(const std::string& name) const {
  int i = find(name);
  LINGUA_CHECK(i >= 0, "no parameter named '", name, "'");
  return i;
}

void ParamStore::layout() {
  total_ = grad_total_ = bf16_total_ = 0;
  for (int id : order_) {
    ParamInfo& p = infos_[id];
    p.offset = total_;
    total_ += padded(p.numel);
    p.grad_offset = p.trainable ? grad_total_ : -1;
    if (p.trainable) grad_total_ += padded(p.numel);
    p.bf16_offset = p.compute_copy ? bf16_total_ : -1;
    if (p.compute_copy) bf16_total_ += padded(p.numel);
  }
}

void ParamStore::finalize() {
  layout();
  params_.assign(total_, 0.0f);
  grads_.assign(grad_total_, 0.0f);
  grads_ptr_ = grads_.data();
  final_ = true;
  ++layout_epoch_;
  ++values_epoch_;
}

void ParamStore::relayout(int fresh) {
  const std::vector<ParamInfo> old = infos_;
  layout();
  ++layout_epoch_;
  ++values_epoch_;
  // Surviving parameters keep their values (and bf16 copies); a fresh one is initialised by the
  // caller; gradients start again at zero. Old and new buffers exist together for the copy.
  auto moved = [&](auto copy) {
    for (int id : order_)
      if (id != fresh) copy(old[id], infos_[id]);
  };
  if (device_ == Device::cuda) {
    DeviceBuffer params(std::max<int64_t>(total_, 1) * sizeof(float)), bf16(std::max<int64_t>(bf16_total_, 1) * 2);
    moved([&](const ParamInfo& a, const ParamInfo& b) {
      copy_device_to_device(params.as<float>() + b.offset, d_params_.as<float>() + a.offset, a.numel * sizeof(float));
      if (a.bf16_offset >= 0 && b.bf16_offset >= 0)
        copy_device_to_device(bf16.as<uint16_t>() + b.bf16_offset, d_bf16_.as<uint16_t>() + a.bf16_offset,
                              a.numel * 2);
    });
    d_params_ = std::move(params);
    d_bf16_ = std::move(bf16);
  } else {
    std::vector<float> params(total_, 0.0f);
    moved([&](const ParamInfo& a, const ParamInfo& b) {
      std::copy(params_.begin() + a.offset, params_.begin() + a.offset + a.numel, params.begin() + b.offset);
    });
    params_ = std::move(params);
  }
  if (external_) grads_ptr_ = nullptr;  // the owner places them again
  else allocate_own_grads();
}

void ParamStore::allocate_own_grads() {
  if (device_ == Device::cuda) {
    d_grads_ = DeviceBuffer(std::max<int64_t>(grad_total_, 1) * sizeof(float));
    d_grads_.zero();
    grads_ptr_ = d_grads_.as<float>();
  } else {
    grads_.assign(grad_total_, 0.0f);
    grads_ptr_ = grads_.data();
  }
}

void ParamStore::init(uint64_t seed) {
  LINGUA_ASSERT(final_);
  seed_ = seed;
  for (int id : order_) init_param(id, seed);
}

void ParamStore::init_param(int id, uint64_t seed) {
  const ParamInfo& p = infos_[id];
  ++values_epoch_;
  if (device_ == Device::cpu) {
    p.init.fill(seed, p, params_.data() + p.offset);
    return;
  }
  std::vector<float> w(p.numel);
  p.init.fill(seed, p, w.data());
  set_param(id, w.data());
}

Tensor ParamStore::view(char* base, const ParamInfo& p, int64_t offset, DType dt) const {
  Tensor t;
  t.data = base + offset * (int64_t)dtype_size(dt);
  t.ndim = (int)p.local_shape.size();
  for (int d = 0; d < t.ndim; ++d) t.shape[d] = p.local_shape[d];
  t.dtype = dt;
  t.device = device_;
  return t;
}

float* ParamStore::params_data() const {
  return device_ == Device::cuda ? d_params_.as<float>() : const_cast<float*>(params_.data());
}

Tensor ParamStore::local_param(int id) const {
  const ParamInfo& p = info(id);
  return view(reinterpret_cast<char*>(params_data()), p, p.offset, DType::f32);
}

Tensor ParamStore::local_grad(int id) const {
  const ParamInfo& p = info(id);
  if (p.grad_offset < 0) return Tensor();
  LINGUA_CHECK(grads_ptr_, "internal error: gradients read before the model placed them");
  return view(reinterpret_cast<char*>(grads_ptr_), p, p.grad_offset, DType::f32);
}

Tensor ParamStore::local_bf16(int id) const {
  const ParamInfo& p = info(id);
  if (device_ != Device::cuda || p.bf16_offset < 0) return Tensor();
  return view(d_bf16_.as<char>(), p, p.bf16_offset, DType::bf16);
}

const ParamStore::FullViews& ParamStore::full_views(int id, const char* what) const {
  const ParamInfo& p = info(id);
  const FullViews& v = full_views_[id];
  LINGUA_CHECK(v.compute.data, "internal error: parameter '", p.name, "' is split over processes and its ", what,
               " was read before the sharding layer gathered it");
  return v;
}

Tensor ParamStore::param(int id) const {
  const ParamInfo& p = info(id);
  LINGUA_CHECK(p.placement.kind == Placement::whole, "internal error: parameter '", p.name,
               "' is split over processes: its fp32 weights are not whole (read compute_param())");
  return local_param(id);
}

Tensor ParamStore::grad(int id) const {
  const ParamInfo& p = info(id);
  if (p.placement.kind == Placement::whole || p.grad_offset < 0) return local_grad(id);
  return full_views(id, "gradient").grad;
}

Tensor ParamStore::compute_param(int id) const {
  const ParamInfo& p = info(id);
  if (p.placement.kind != Placement::whole) return full_views(id, "compute weight").compute;
  if (full_views_[id].compute.data) return full_views_[id].compute;
  if (device_ != Device::cuda) return local_param(id);
  LINGUA_CHECK(p.bf16_offset >= 0, "internal error: parameter '", p.name, "' has no bf16 copy (read param())");
  return local_bf16(id);
}

Tensor ParamStore::bf16_copy(int id) const {
  if (device_ != Device::cuda || info(id).bf16_offset < 0) return Tensor();
  return compute_param(id);
}

void ParamStore::set_full_views(int id, const Tensor& compute, const Tensor& grad) {
  ++values_epoch_;
  const ParamInfo& p = info(id);
  LINGUA_CHECK(p.placement.kind != Placement::whole, "internal error: set_full_views of whole parameter '", p.name, "'");
  full_views_[id] = {compute, grad};
}

void ParamStore::set_compute_view(int id, const Tensor& compute) {
  ++values_epoch_;
  const ParamInfo& p = info(id);
  LINGUA_CHECK(p.placement.kind == Placement::whole, "internal error: set_compute_view of split parameter '", p.name, "'");
  if (compute.data) {
    const DType want = device_ == Device::cuda ? DType::bf16 : DType::f32;
    bool same = compute.ndim == (int)p.shape.size();
    for (int k = 0; same && k < compute.ndim; ++k) same = compute.shape[k] == p.shape[k];
    LINGUA_CHECK(same && compute.dtype == want && compute.device == device_,
                 "internal error: compute view of '", p.name, "' is ", compute.str(), ", expected ",
                 shape_str(p.shape), " ", dtype_name(want));
  }
  full_views_[id].compute = compute;
}

void ParamStore::set_placement(int id, Placement pl) {
  const ParamInfo& old = info(id);
  LINGUA_CHECK(old.placement.kind == Placement::whole && device_ == Device::cpu,
               "internal error: set_placement splits whole parameters on the CPU (before to_device)");
  if (pl.kind == Placement::whole) return;
  const std::vector<float> full = final_ ? host_param(id) : std::vector<float>();
  ParamInfo& p = infos_[id];
  p.placement = pl;
  if (pl.kind == Placement::flat_shard) {
    p.local_shape = {(p.full_numel() + pl.size - 1) / pl.size};
  } else {
    LINGUA_CHECK(!p.shape.empty() && p.shape.back() % pl.size == 0, "parameter '", p.name, "' of shape ",
                 shape_str(p.shape), ": its last axis does not split into ", pl.size, " equal column slices");
    p.local_shape = p.shape;
    p.local_shape.back() /= pl.size;
  }
  p.numel = product(p.local_shape);
  if (!final_) return;
  relayout(id);
  std::vector<float> local(p.numel, 0.0f);
  for (int64_t i = 0; i < p.numel; ++i)
    if (const int64_t g = p.global_index(i); g >= 0) local[i] = full[g];
  set_param(id, local.data());
}

void ParamStore::zero_grads() { zero_grads(0, grad_total_); }

void ParamStore::zero_grads(int64_t begin, int64_t end) {
  LINGUA_ASSERT(0 <= begin && begin <= end && end <= grad_total_);
  if (!grads_ptr_ || begin == end) return;
  if (device_ == Device::cuda) cuda_memset_zero(grads_ptr_ + begin, (size_t)(end - begin) * sizeof(float));
  else std::fill(grads_ptr_ + begin, grads_ptr_ + end, 0.0f);
}

void ParamStore::use_external_grads(float* grads) {
  LINGUA_ASSERT(final_);
  grads_ptr_ = grads;
  external_ = true;
  grads_.clear();
  grads_.shrink_to_fit();
  d_grads_ = DeviceBuffer();
}

void ParamStore::use_own_grads() {
  if (!external_) return;
  external_ = false;
  allocate_own_grads();
}

std::vector<float> ParamStore::host_values() const {
  if (device_ != Device::cuda) return params_;
  std::vector<float> v(total_);
  if (total_) copy_to_host(v.data(), d_params_.data(), total_ * sizeof(float));
  return v;
}

std::vector<float> ParamStore::host_param(int id) const {
  const ParamInfo& p = info(id);
  std::vector<float> v(p.numel);
  if (device_ == Device::cuda) copy_to_host(v.data(), d_params_.as<float>() + p.offset, p.numel * sizeof(float));
  else std::copy(params_.begin() + p.offset, params_.begin() + p.offset + p.numel, v.begin());
  return v;
}

std::vector<float> ParamStore::host_grads() const {
  LINGUA_CHECK(grads_ptr_, "internal error: gradients read before the model placed them");
  std::vector<float> v(grad_total_);
  if (device_ == Device::cuda) copy_to_host(v.data(), grads_ptr_, grad_total_ * sizeof(float));
  else std::copy(grads_ptr_, grads_ptr_ + grad_total_, v.begin());
  return v;
}

void ParamStore::set_param(int id, const float* values) {
  const ParamInfo& p = info(id);
  ++values_epoch_;
  if (device_ != Device::cuda) {
    std::copy(values, values + p.numel, params_.begin() + p.offset);
    return;
  }
  copy_to_device(d_params_.as<float>() + p.offset, values, p.numel * sizeof(float));
  if (p.bf16_offset >= 0) {
    std::vector<uint16_t> h(p.numel);
    for (int64_t i = 0; i < p.numel; ++i) h[i] = float_to_bf16(values[i]);
    copy_to_device(d_bf16_.as<uint16_t>() + p.bf16_offset, h.data(), h.size() * 2);
  }
}

size_t ParamStore::host_bytes() const { return (params_.capacity() + grads_.capacity()) * sizeof(float); }

void ParamStore::to_device(Device device) {
  LINGUA_ASSERT(final_);
  if (device == device_) return;
  LINGUA_CHECK(device == Device::cuda, "internal error: a ParamStore moves from the CPU to CUDA only");
  LINGUA_CHECK(!external_, "internal error: a ParamStore with external gradients cannot change device");
  d_params_ = DeviceBuffer(std::max<int64_t>(total_, 1) * sizeof(float));
  d_grads_ = DeviceBuffer(std::max<int64_t>(grad_total_, 1) * sizeof(float));
  d_bf16_ = DeviceBuffer(std::max<int64_t>(bf16_total_, 1) * 2);
  if (total_) copy_to_device(d_params_.data(), params_.data(), total_ * sizeof(float));
  std::vector<uint16_t> h(bf16_total_, 0);
  for (int id : order_) {
    const ParamInfo& p = infos_[id];
    if (p.bf16_offset >= 0)
      for (int64_t i = 0; i < p.numel; ++i) h[p.bf16_offset + i] = float_to_bf16(params_[p.offset + i]);
  }
  if (bf16_total_) copy_to_device(d_bf16_.data(), h.data(), bf16_total_ * 2);
  d_grads_.zero();
  grads_ptr_ = d_grads_.as<float>();
  device_ = device;
  params_.clear();
  params_.shrink_to_fit();
  grads_.clear();
  grads_.shrink_to_fit();
  scalars_.to_device(device);
  ++layout_epoch_;
  ++values_epoch_;
}

}  // namespace lingua
