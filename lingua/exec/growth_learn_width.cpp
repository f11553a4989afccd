#include "lingua/exec/growth_learn_width.h"

#include <cblas.h>

#include <cmath>

#include "lingua/model/growth.h"

namespace lingua {

namespace {

// out [M, N] = op(a) op(b), fp32 (beta 0: out is not read).
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* a, const float* b, float* out) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::fill(out, out + M * N, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
              1.0f, a, ta ? (int)M : (int)K, b, tb ? (int)K : (int)N, 0.0f, out, (int)N);
}

}  // namespace

WidthExpansion::WidthExpansion(const Transformer& source, const Transformer& target, const std::vector<int>& list,
                               uint64_t seed) {
  const ParamStore& s = source.params();
  const ParamStore& t = target.params();
  const int64_t Ds = source.dims().dim, Dt = target.dims().dim, head_dim = target.dims().head_dim;
  std::map<std::string, int> by_name;  // matrix name -> index
  for (int id : t.ids()) {
    const ParamInfo& p = t.info(id);
    int layer = -1;
    std::string rest, source_name = p.name;
    if (growth_block_param(target, p.name, &layer, &rest)) source_name = "layers." + std::to_string(list[layer]) + "." + rest;
    const ParamInfo& sp = s.info(s.index(source_name));
    if (sp.shape == p.shape) continue;
    // A 3-D block factor [k, m, n] (BlockDense, BlockShuffle) widens its FFN units, middle units
    // and model dimension (axis 1 or 2) as its dense form (block_factor_dense, growth.h).
    const bool block = p.shape.size() == 3;
    LINGUA_CHECK(p.shape.size() <= 3 && p.axes.size() == p.shape.size() && (!block || p.shape[0] == sp.shape[0]),
                 "G_learn: ", p.name, " ", shape_str(p.shape), " grows from ", shape_str(sp.shape),
                 ": only 1-D and 2-D parameters and the axes of block factors widen");
    Plan plan;
    plan.rows = sp.shape[0];
    plan.cols = p.shape.size() >= 2 ? sp.shape[1] : 1;
    if (block) {
      plan.rows = sp.shape[0] * sp.shape[1];
      plan.cols = sp.shape[0] * sp.shape[2];
      plan.source_shape = sp.shape;
      plan.target_shape = p.shape;
      plan.block = true;
      plan.interleaved = block_factor_interleaved(p.axes);
    }
    std::vector<Stage> dim_stages;
    for (int k = 0; k < (int)p.shape.size(); ++k) {
      if (p.shape[k] == sp.shape[k]) continue;
      const std::string& role = p.axes[k];
      const bool dim = role == "dim", heads = role == "q_heads" || role == "kv_heads";
      const bool units = role == "hidden" || role == "2hidden", mid = role == "mid";
      LINGUA_CHECK(dim || ((heads || units) && layer >= 0 && (p.shape.size() == 2 || (block && units))) ||
                       (mid && block && layer >= 0),
                   "G_learn: ", p.name, "'s axis '", role, "' grows: only the model dimension, and a block's FFN "
                   "units, heads and BlockShuffle's middle units, widen");
      LINGUA_CHECK(!block || k > 0, "G_learn: ", p.name, " changes its number of blocks");
      // Writers' and readers' sides (a table's columns are its output; a block factor's output is
      // axis 1); a norm's weight apart. "2hidden" holds the units twice (the gate's, then the up's).
      const bool out = block ? k == 1 : (k == 0) != p.embedding;
      const std::string side = p.shape.size() == 1 ? "norm" : out ? "out" : "in";
      const std::string linear = rest.substr(0, rest.find(".blocks"));
      const std::string name = dim   ? "dim." + side
                               : mid ? "layers." + std::to_string(layer) + "." + linear + ".mid." + side
                                     : "layers." + std::to_string(layer) + "." + (units ? "hidden" : role) + "." + side;
      const int halves = role == "2hidden" ? 2 : 1;
      // The axis' units (a block factor: k blocks of them; "2hidden": each twice).
      const int64_t units_t = p.shape[k] * (block ? p.shape[0] : 1) / halves,
                    units_s = sp.shape[k] * (block ? sp.shape[0] : 1) / halves;
      auto [it, fresh] = by_name.emplace(name, (int)matrices_.size());
      if (fresh) {
        Matrix m;
        m.name = name;
        m.unit = heads ? head_dim : 1;
        m.rows = dim ? Dt : units_t / m.unit;
        m.cols = dim ? Ds : units_s / m.unit;
        m.offset = start_.size();
        start_.resize(start_.size() + (size_t)(m.rows * m.cols), 0.0);
        // G_split's scales, as grow_model computes them (fp32), its units kept in their blocks.
        const SplitChoice c =
            dim   ? split_choice(m.cols, m.rows, seed, -1, false, model_dim_blocks(target))
            : mid ? split_choice(m.cols, m.rows, seed, middle_units_stream(layer, linear), false, {p.shape[0], p.shape[0]})
                  : split_choice(m.cols, m.rows, seed, layer, heads, units ? ffn_unit_blocks(target, layer) : UnitBlocks{});
        for (int64_t j = 0; j < m.rows; ++j) {
          const int n = c.copies[(size_t)c.map[(size_t)j]];
          const float v = side == "norm" ? (float)std::sqrt((double)Ds / (double)Dt)
                          : dim          ? 1.0f / std::sqrt((float)n)
                          : side == "in" && n > 1 ? 1.0f / (float)n
                                                  : 1.0f;
          start_[m.offset + (size_t)(j * m.cols + c.map[(size_t)j])] = v;
        }
        matrices_.push_back(m);
      }
      const int64_t n_units = dim && !block ? p.shape[k] : units_t;
      LINGUA_CHECK(matrices_[it->second].rows * matrices_[it->second].unit == n_units, "G_learn: ", p.name,
                   "'s axis '", role, "' has ", n_units, " units, the other parameters' ",
                   matrices_[it->second].rows * matrices_[it->second].unit);
      const int axis = block ? k - 1 : k;  // (of the block factor's dense form)
      LINGUA_CHECK(halves == 1 || axis == 0, "G_learn: ", p.name, ": a '2hidden' axis widens as rows only");
      (dim ? dim_stages : plan.stages).push_back({axis, it->second, halves});
    }
    // G_split's order: the units or heads, then the model dimension.
    plan.stages.insert(plan.stages.end(), dim_stages.begin(), dim_stages.end());
    plans_[id] = plan;
  }
  load(start_.data());
}

void WidthExpansion::load(const double* coef) {
  dense_.resize(matrices_.size());
  for (size_t i = 0; i < matrices_.size(); ++i) {
    const Matrix& m = matrices_[i];
    const int64_t u = m.unit, R = m.rows * u, C = m.cols * u;
    dense_[i].assign((size_t)(R * C), 0.0f);
    for (int64_t a = 0; a < m.rows; ++a)
      for (int64_t b = 0; b < m.cols; ++b) {
        const float v = (float)coef[m.offset + (size_t)(a * m.cols + b)];
        for (int64_t d = 0; d < u; ++d) dense_[i][(size_t)((a * u + d) * C + b * u + d)] = v;
      }
  }
}

std::vector<std::vector<float>> WidthExpansion::forward(const Plan& plan, const std::vector<float>& x,
                                                        std::vector<std::pair<int64_t, int64_t>>* views) const {
  std::vector<std::vector<float>> ts{x};
  int64_t R = plan.rows, C = plan.cols;
  views->assign(1, {R, C});
  for (const Stage& st : plan.stages) {
    const Matrix& m = matrices_[(size_t)st.matrix];
    const std::vector<float>& M = dense_[(size_t)st.matrix];
    const int64_t nt = m.rows * m.unit, ns = m.cols * m.unit;
    const std::vector<float>& in = ts.back();
    std::vector<float> out;
    if (st.axis == 0) {  // out [nt, C] = M [nt, ns] in [ns, C] (per half)
      const int h = st.halves;
      out.resize((size_t)(h * nt * C));
      for (int i = 0; i < h; ++i) gemm(false, false, nt, C, ns, M.data(), in.data() + i * ns * C, out.data() + i * nt * C);
      R = h * nt;
    } else {  // out [R, nt] = in [R, ns] M^T
      out.resize((size_t)(R * nt));
      gemm(false, true, R, nt, ns, in.data(), M.data(), out.data());
      C = nt;
    }
    ts.push_back(std::move(out));
    views->push_back({R, C});
  }
  return ts;
}

std::vector<float> WidthExpansion::apply(int id, const std::vector<float>& x) const {
  auto it = plans_.find(id);
  if (it == plans_.end()) return x;
  const Plan& plan = it->second;
  std::vector<std::pair<int64_t, int64_t>> views;
  if (!plan.block) return std::move(forward(plan, x, &views).back());
  // A block factor: its dense form expanded, then cut back to its blocks.
  const std::vector<float> dense = block_factor_dense(x, plan.source_shape, plan.interleaved);
  return block_factor_blocks(forward(plan, dense, &views).back(), plan.target_shape, plan.interleaved);
}

std::vector<float> WidthExpansion::backward(int id, const std::vector<float>& x, const float* g, double* dcoef) const {
  auto it = plans_.find(id);
  if (it == plans_.end()) return std::vector<float>(g, g + x.size());
  const Plan& plan = it->second;
  std::vector<std::pair<int64_t, int64_t>> views;
  // A block factor: the stages run on its dense form; the cut's gradient is g in dense form, the
  // dense form's is dL/dx's blocks.
  const bool block = plan.block;
  const std::vector<std::vector<float>> ts =
      forward(plan, block ? block_factor_dense(x, plan.source_shape, plan.interleaved) : x, &views);
  const std::vector<int64_t>& ts_shape = plan.target_shape;
  std::vector<float> grad =  // dL/d(the output of stage i)
      block ? block_factor_dense(std::vector<float>(g, g + ts_shape[0] * ts_shape[1] * ts_shape[2]), ts_shape,
                                 plan.interleaved)
            : std::vector<float>(g, g + ts.back().size());
  for (int i = (int)plan.stages.size() - 1; i >= 0; --i) {
    const Stage& st = plan.stages[(size_t)i];
    const Matrix& m = matrices_[(size_t)st.matrix];
    const std::vector<float>& M = dense_[(size_t)st.matrix];
    const int64_t nt = m.rows * m.unit, ns = m.cols * m.unit, R = views[(size_t)i].first, C = views[(size_t)i].second;
    const std::vector<float>& in = ts[(size_t)i];
    std::vector<float> dM((size_t)(nt * ns)), din(in.size());
    if (st.axis == 0) {  // out = M in: dM = G in^T [nt, ns], din = M^T G [ns, C] (per half; dM summed)
      const int h = st.halves;
      const int64_t c = C;
      std::vector<float> part((size_t)(nt * ns));
      for (int k = 0; k < h; ++k) {
        gemm(false, true, nt, ns, c, grad.data() + k * nt * c, in.data() + k * ns * c, k == 0 ? dM.data() : part.data());
        if (k > 0)
          for (size_t e = 0; e < dM.size(); ++e) dM[e] += part[e];
        gemm(true, false, ns, c, nt, M.data(), grad.data() + k * nt * c, din.data() + k * ns * c);
      }
    } else {  // out = in M^T: dM = G^T in [nt, ns], din = G M [R, ns]
      gemm(true, false, nt, ns, R, grad.data(), in.data(), dM.data());
      gemm(false, false, R, ns, nt, grad.data(), M.data(), din.data());
    }
    // A head's entry scales head_dim rows: its gradient sums theirs (the kron's diagonal).
    const int64_t u = m.unit;
    for (int64_t a = 0; a < m.rows; ++a)
      for (int64_t b = 0; b < m.cols; ++b) {
        double s = 0;
        for (int64_t d = 0; d < u; ++d) s += dM[(size_t)((a * u + d) * ns + b * u + d)];
        dcoef[m.offset + (size_t)(a * m.cols + b)] += s;
      }
    grad = std::move(din);
  }
  return block ? block_factor_blocks(grad, plan.source_shape, plan.interleaved) : grad;
}

}  // namespace lingua
