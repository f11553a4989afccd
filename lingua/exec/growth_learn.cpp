#include "lingua/exec/growth_learn.h"

#include <algorithm>
#include <cmath>

#include "lingua/model/growth.h"

namespace lingua {

LearnedGrowth::LearnedGrowth(const Transformer& source, Transformer& target, const std::vector<int>& list,
                             uint64_t seed, Gather gather)
    : target_(target),
      gather_(std::move(gather)),
      Ls_(source.n_layers()),
      Lt_(target.n_layers()),
      // grow_model first: its checks of the two layouts and the list, and it writes what the map
      // leaves as it is (the tensors outside the blocks that do not widen).
      width_((grow_model(source, target, GrowthOperator::learn, list, seed), source), target, list, seed) {
  const ParamStore& s = source.params();
  const ParamStore& t = target.params();
  for (int id : t.ids())
    LINGUA_CHECK(gather_ || t.info(id).placement.kind == Placement::whole, "G_learn: ", t.info(id).name,
                 " is split over processes and no gather was given");
  std::map<std::string, int> index;
  for (int id : t.ids()) {
    int l;
    std::string rest;
    const bool in_block = growth_block_param(target, t.info(id).name, &l, &rest);
    if (in_block && l == 0) index[rest] = 0;
    if (!in_block && width_.expands(id)) rest_.push_back({id, s.host_param(s.index(t.info(id).name))});
  }
  for (auto& [rest, i] : index) {
    i = (int)suffixes_.size();
    suffixes_.push_back(rest);
    std::vector<std::vector<float>> per_layer;
    for (int j = 0; j < Ls_; ++j) per_layer.push_back(s.host_param(s.index("layers." + std::to_string(j) + "." + rest)));
    src_.push_back(std::move(per_layer));
  }
  dst_ids_.assign(Lt_, std::vector<int>(suffixes_.size(), -1));
  for (int id : t.ids()) {
    int l;
    std::string rest;
    if (!growth_block_param(target, t.info(id).name, &l, &rest)) continue;
    auto it = index.find(rest);
    LINGUA_CHECK(it != index.end(), "G_learn: target parameter ", t.info(id).name, " has no counterpart in layer 0 "
                 "(every block must hold the same parameters)");
    dst_ids_[l][it->second] = id;
  }
  const size_t P = suffixes_.size();
  alpha_size_ = (size_t)Lt_ * P * Ls_;
  coef_.assign(alpha_size_, 0.0);
  for (int l = 0; l < Lt_; ++l)
    for (size_t p = 0; p < P; ++p) coef_[((size_t)l * P + p) * Ls_ + list[l]] = 1.0;
  coef_.insert(coef_.end(), width_.start().begin(), width_.start().end());
  m_.assign(coef_.size(), 0.0);
  v_.assign(coef_.size(), 0.0);
  write_target();
}

std::vector<float> LearnedGrowth::mix(int l, size_t p) const {
  const size_t P = suffixes_.size();
  std::vector<float> w(src_[p][0].size(), 0.0f);
  for (int j = 0; j < Ls_; ++j) {
    const double a = coef_[((size_t)l * P + p) * Ls_ + j];
    if (a == 0.0) continue;
    const std::vector<float>& s = src_[p][j];
    for (size_t k = 0; k < w.size(); ++k) w[k] += (float)(a * s[k]);
  }
  return w;
}

void LearnedGrowth::put(int id, const std::vector<float>& full) {
  ParamStore& t = target_.params();
  t.set_param(id, t.info(id).held_part(full).data());
}

void LearnedGrowth::write_target() {
  width_.load(coef_.data() + alpha_size_);
  for (int l = 0; l < Lt_; ++l)
    for (size_t p = 0; p < suffixes_.size(); ++p) {
      const int id = dst_ids_[l][p];
      put(id, width_.apply(id, mix(l, p)));
    }
  for (const auto& [id, x] : rest_) put(id, width_.apply(id, x));
  target_.params().values_written();
}

void LearnedGrowth::set_coefficients(const std::vector<double>& c) {
  LINGUA_CHECK(c.size() == coef_.size(), "G_learn: the map has ", coef_.size(), " coefficients, got ", c.size());
  coef_ = c;
  write_target();
}

void LearnedGrowth::set_alpha(const std::vector<double>& a) {
  LINGUA_CHECK(a.size() == alpha_size_, "G_learn: alpha has ", alpha_size_, " entries, got ", a.size());
  std::copy(a.begin(), a.end(), coef_.begin());
  write_target();
}

std::vector<double> LearnedGrowth::gradient(Executor& exec, const int32_t* tokens, const int32_t* targets, int B,
                                            int T, double* loss, int replicas) {
  ParamStore& t = target_.params();
  exec.zero_grads();
  const LossSum l = exec.forward_backward(tokens, targets, B, T, 1.0f / ((float)(B * T) * (float)std::max(1, replicas)));
  if (loss) *loss = l.nll / (double)std::max<int64_t>(1, l.tokens);
  const std::vector<float> g = t.host_grads();
  // Split parameters' gradients gathered whole (every process, in id order: a collective each).
  std::map<int, std::vector<float>> full;
  for (int id : t.ids()) {
    const ParamInfo& info = t.info(id);
    if (info.placement.kind == Placement::whole || info.grad_offset < 0) continue;
    const float* local = g.data() + info.grad_offset;
    full[id] = gather_(info, std::vector<float>(local, local + info.numel));
  }
  auto grad_of = [&](int id) -> const float* {
    const ParamInfo& info = t.info(id);
    LINGUA_CHECK(info.grad_offset >= 0, "G_learn: ", info.name, " is frozen: it gets no gradient to learn from");
    if (auto it = full.find(id); it != full.end()) return it->second.data();
    return g.data() + info.grad_offset;
  };
  const size_t P = suffixes_.size();
  std::vector<double> d(coef_.size(), 0.0);
  double* dwidth = d.data() + alpha_size_;
  for (int l = 0; l < Lt_; ++l)
    for (size_t p = 0; p < P; ++p) {
      const int id = dst_ids_[l][p];
      // dL/dX: the target's gradient through the width matrices (none: itself).
      std::vector<float> through;
      if (width_.expands(id)) through = width_.backward(id, mix(l, p), grad_of(id), dwidth);
      const float* gx = width_.expands(id) ? through.data() : grad_of(id);
      for (int j = 0; j < Ls_; ++j) {
        const std::vector<float>& s = src_[p][j];
        double dot = 0;
        for (size_t k = 0; k < s.size(); ++k) dot += (double)gx[k] * s[k];
        d[((size_t)l * P + p) * Ls_ + j] = dot;
      }
    }
  for (const auto& [id, x] : rest_) width_.backward(id, x, grad_of(id), dwidth);
  return d;
}

double LearnedGrowth::step(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T, double lr,
                           int replicas) {
  double loss = 0;
  apply_gradient(gradient(exec, tokens, targets, B, T, &loss, replicas), lr);
  return loss;
}

void LearnedGrowth::apply_gradient(const std::vector<double>& d, double lr) {
  LINGUA_CHECK(d.size() == coef_.size(), "G_learn: the map has ", coef_.size(), " coefficients, its gradient ", d.size());
  ++t_;
  const double b1 = 0.9, b2 = 0.999, c1 = 1 - std::pow(b1, t_), c2 = 1 - std::pow(b2, t_);
  for (size_t i = 0; i < coef_.size(); ++i) {
    m_[i] = b1 * m_[i] + (1 - b1) * d[i];
    v_[i] = b2 * v_[i] + (1 - b2) * d[i] * d[i];
    coef_[i] -= lr * (m_[i] / c1) / (std::sqrt(v_[i] / c2) + 1e-8);
  }
  write_target();
}

}  // namespace lingua
