#include "lingua/model/param_store.h"

#include <algorithm>

#include "lingua/core/bf16.h"
#include "lingua/core/philox.h"

namespace lingua {

uint32_t name_stream_id(const std::string& name) {
  uint32_t h = 2166136261u;
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return h;
}

int ParamStore::add(const std::string& name, std::vector<int64_t> shape, ParamInit init, std::string group,
                    bool embedding, bool compute_copy) {
  LINGUA_CHECK(!final_, "internal error: parameter '", name, "' declared after finalize()");
  LINGUA_CHECK(!by_name_.count(name), "internal error: parameter '", name, "' declared twice");
  ParamInfo p;
  p.name = name;
  p.numel = 1;
  for (auto d : shape) p.numel *= d;
  p.shape = std::move(shape);
  p.offset = total_;
  // Keep every parameter 64-byte aligned inside the flat buffer.
  total_ += (p.numel + 15) & ~int64_t(15);
  p.group = std::move(group);
  p.init = init;
  p.embedding = embedding;
  p.compute_copy = compute_copy;
  if (compute_copy) {
    // Same padding as the fp32 buffer, so parameters adjacent there are adjacent here too.
    p.bf16_offset = bf16_total_;
    bf16_total_ += (p.numel + 15) & ~int64_t(15);
  }
  by_name_[p.name] = (int)infos_.size();
  infos_.push_back(std::move(p));
  return (int)infos_.size() - 1;
}

void ParamStore::finalize() {
  params_.assign(total_, 0.0f);
  grads_.assign(total_, 0.0f);
  grads_ptr_ = grads_.data();
  final_ = true;
}

void ParamStore::init(uint64_t seed) {
  LINGUA_ASSERT(final_);
  for (auto& p : infos_) {
    float* w = params_.data() + p.offset;
    switch (p.init.kind) {
      case ParamInit::ones: std::fill(w, w + p.numel, 1.0f); break;
      case ParamInit::zeros: std::fill(w, w + p.numel, 0.0f); break;
      case ParamInit::trunc_normal:
      case ParamInit::normal: {
        const uint32_t stream = name_stream_id(p.name);
        const float std = p.init.std;
        const bool cut = p.init.kind == ParamInit::trunc_normal;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < p.numel; ++i)
          w[i] = cut ? philox_trunc_normal(seed, stream, (uint64_t)i, std) : philox_normal(seed, stream, (uint64_t)i, std);
        break;
      }
    }
  }
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

Tensor ParamStore::view(void* base, int i, DType dt, Device dev) const {
  const ParamInfo& p = infos_[i];
  Tensor t;
  t.data = static_cast<char*>(base) + p.offset * dtype_size(dt);
  t.ndim = (int)p.shape.size();
  for (int d = 0; d < t.ndim; ++d) t.shape[d] = p.shape[d];
  t.dtype = dt;
  t.device = dev;
  return t;
}

Tensor ParamStore::param(int i) const {
  return device_ == Device::cuda ? view(d_params_.data(), i, DType::f32, Device::cuda)
                                 : view(params_.data(), i, DType::f32, Device::cpu);
}

Tensor ParamStore::grad(int i) const {
  LINGUA_CHECK(grads_ptr_, "internal error: gradients read before the model placed them");
  return view(grads_ptr_, i, DType::f32, device_);
}

Tensor ParamStore::compute_param(int i) const {
  if (device_ != Device::cuda) return param(i);
  const ParamInfo& p = infos_[i];
  LINGUA_CHECK(p.bf16_offset >= 0, "internal error: parameter '", p.name, "' has no bf16 copy (read param())");
  Tensor t = view(d_bf16_.data(), i, DType::bf16, Device::cuda);
  t.data = static_cast<char*>(d_bf16_.data()) + p.bf16_offset * 2;
  return t;
}

Tensor ParamStore::bf16_copy(int i) const {
  if (device_ != Device::cuda || infos_[i].bf16_offset < 0) return Tensor();
  return compute_param(i);
}

Tensor ParamStore::host_param(int i) const { return view(params_.data(), i, DType::f32, Device::cpu); }

float* ParamStore::grads() {
  LINGUA_CHECK(device_ == Device::cpu, "internal error: host gradients requested from a CUDA ParamStore");
  return grads_ptr_;
}

void ParamStore::zero_grads() { zero_grads(0, total_); }

void ParamStore::zero_grads(int64_t begin, int64_t end) {
  LINGUA_ASSERT(0 <= begin && begin <= end && end <= total_);
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
  if (device_ == Device::cuda) {
    d_grads_ = DeviceBuffer(total_ * sizeof(float));
    d_grads_.zero();
    grads_ptr_ = d_grads_.as<float>();
  } else {
    grads_.assign(total_, 0.0f);
    grads_ptr_ = grads_.data();
  }
}

void ParamStore::to_device(Device device) {
  LINGUA_ASSERT(final_);
  if (device == device_) return;
  LINGUA_CHECK(device == Device::cuda, "internal error: a ParamStore moves from the CPU to CUDA only");
  LINGUA_CHECK(!external_, "internal error: a ParamStore with external gradients cannot change device");
  d_params_ = DeviceBuffer(total_ * sizeof(float));
  d_grads_ = DeviceBuffer(total_ * sizeof(float));
  d_bf16_ = DeviceBuffer(bf16_total_ * 2);
  device_ = device;
  grads_.clear();
  grads_.shrink_to_fit();
  d_grads_.zero();
  grads_ptr_ = d_grads_.as<float>();
  upload();
}

void ParamStore::upload() {
  if (device_ != Device::cuda) return;
  copy_to_device(d_params_.data(), params_.data(), total_ * sizeof(float));
  std::vector<uint16_t> h(bf16_total_, 0);
  for (auto& p : infos_)
    if (p.bf16_offset >= 0)
      for (int64_t i = 0; i < p.numel; ++i) h[p.bf16_offset + i] = float_to_bf16(params_[p.offset + i]);
  copy_to_device(d_bf16_.data(), h.data(), bf16_total_ * 2);
}

void ParamStore::download() const {
  if (device_ != Device::cuda) return;
  copy_to_host(params_.data(), d_params_.data(), total_ * sizeof(float));
}

}  // namespace lingua
