#include "lingua/exec/growth_learn.h"

#include <algorithm>
#include <cmath>

#include "lingua/model/growth.h"

namespace lingua {

LearnedGrowth::LearnedGrowth(const Transformer& source, Transformer& target, const std::vector<int>& list)
    : target_(target), Ls_(source.n_layers()), Lt_(target.n_layers()) {
  // The map starts as G_stack: every tensor outside the blocks copied, each block from its list entry.
  grow_model(source, target, GrowthOperator::stack, list);
  const ParamStore& s = source.params();
  const ParamStore& t = target.params();
  std::map<std::string, int> index;
  for (int id : t.ids()) {
    int l;
    std::string rest;
    if (split_layer_name(t.info(id).name, &l, &rest) && l == 0) index[rest] = 0;
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
    if (!split_layer_name(t.info(id).name, &l, &rest)) continue;
    auto it = index.find(rest);
    LINGUA_CHECK(it != index.end(), "G_learn: target parameter ", t.info(id).name, " has no counterpart in layer 0 "
                 "(every block must hold the same parameters)");
    dst_ids_[l][it->second] = id;
  }
  const size_t P = suffixes_.size();
  alpha_.assign((size_t)Lt_ * P * Ls_, 0.0);
  for (int l = 0; l < Lt_; ++l)
    for (size_t p = 0; p < P; ++p) alpha_[((size_t)l * P + p) * Ls_ + list[l]] = 1.0;
  m_.assign(alpha_.size(), 0.0);
  v_.assign(alpha_.size(), 0.0);
}

void LearnedGrowth::write_target() {
  ParamStore& t = target_.params();
  const size_t P = suffixes_.size();
  for (int l = 0; l < Lt_; ++l)
    for (size_t p = 0; p < P; ++p) {
      std::vector<float> w(src_[p][0].size(), 0.0f);
      for (int j = 0; j < Ls_; ++j) {
        const double a = alpha_[((size_t)l * P + p) * Ls_ + j];
        if (a == 0.0) continue;
        const std::vector<float>& s = src_[p][j];
        for (size_t k = 0; k < w.size(); ++k) w[k] += (float)(a * s[k]);
      }
      t.set_param(dst_ids_[l][p], w.data());
    }
  t.values_written();
}

void LearnedGrowth::set_alpha(const std::vector<double>& a) {
  LINGUA_CHECK(a.size() == alpha_.size(), "G_learn: alpha has ", alpha_.size(), " entries, got ", a.size());
  alpha_ = a;
  write_target();
}

std::vector<double> LearnedGrowth::gradient(Executor& exec, const int32_t* tokens, const int32_t* targets, int B,
                                            int T, double* loss, int replicas) {
  ParamStore& t = target_.params();
  exec.zero_grads();
  const LossSum l = exec.forward_backward(tokens, targets, B, T, 1.0f / ((float)(B * T) * (float)std::max(1, replicas)));
  if (loss) *loss = l.nll / (double)std::max<int64_t>(1, l.tokens);
  const std::vector<float> g = t.host_grads();
  const size_t P = suffixes_.size();
  std::vector<double> d(alpha_.size(), 0.0);
  for (int l = 0; l < Lt_; ++l)
    for (size_t p = 0; p < P; ++p) {
      const ParamInfo& info = t.info(dst_ids_[l][p]);
      LINGUA_CHECK(info.grad_offset >= 0, "G_learn: ", info.name, " is frozen: it gets no gradient to learn from");
      const float* gp = g.data() + info.grad_offset;
      for (int j = 0; j < Ls_; ++j) {
        const std::vector<float>& s = src_[p][j];
        double dot = 0;
        for (size_t k = 0; k < s.size(); ++k) dot += (double)gp[k] * s[k];
        d[((size_t)l * P + p) * Ls_ + j] = dot;
      }
    }
  return d;
}

double LearnedGrowth::step(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T, double lr,
                           int replicas) {
  double loss = 0;
  const std::vector<double> d = gradient(exec, tokens, targets, B, T, &loss, replicas);
  ++t_;
  const double b1 = 0.9, b2 = 0.999, c1 = 1 - std::pow(b1, t_), c2 = 1 - std::pow(b2, t_);
  for (size_t i = 0; i < alpha_.size(); ++i) {
    m_[i] = b1 * m_[i] + (1 - b1) * d[i];
    v_[i] = b2 * v_[i] + (1 - b2) * d[i] * d[i];
    alpha_[i] -= lr * (m_[i] / c1) / (std::sqrt(v_[i] / c2) + 1e-8);
  }
  write_target();
  return loss;
}

}  // namespace lingua
