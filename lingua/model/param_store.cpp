#include "lingua/model/param_store.h"

#include <algorithm>

#include "lingua/core/philox.h"

namespace lingua {

uint32_t name_stream_id(const std::string& name) {
  uint32_t h = 2166136261u;
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return h;
}

int ParamStore::add(const std::string& name, std::vector<int64_t> shape, ParamInit init, std::string group,
                    bool embedding) {
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
  by_name_[p.name] = (int)infos_.size();
  infos_.push_back(std::move(p));
  return (int)infos_.size() - 1;
}

void ParamStore::finalize() {
  params_.assign(total_, 0.0f);
  grads_.assign(total_, 0.0f);
  final_ = true;
}

void ParamStore::init(uint64_t seed) {
  LINGUA_ASSERT(final_);
  for (auto& p : infos_) {
    float* w = params_.data() + p.offset;
    switch (p.init.kind) {
      case ParamInit::ones: std::fill(w, w + p.numel, 1.0f); break;
      case ParamInit::zeros: std::fill(w, w + p.numel, 0.0f); break;
      case ParamInit::trunc_normal: {
        uint32_t stream = name_stream_id(p.name);
        float std = p.init.std;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < p.numel; ++i) w[i] = philox_trunc_normal(seed, stream, (uint64_t)i, std);
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

Tensor ParamStore::view(float* base, int i) const {
  const ParamInfo& p = infos_[i];
  Tensor t;
  t.data = base + p.offset;
  t.ndim = (int)p.shape.size();
  for (int d = 0; d < t.ndim; ++d) t.shape[d] = p.shape[d];
  return t;
}

Tensor ParamStore::param(int i) const { return view(params_.data(), i); }
Tensor ParamStore::grad(int i) const { return view(grads_.data(), i); }
void ParamStore::zero_grads() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

}  // namespace lingua
