// LowRank FFN (structured FFN layers, SPEC §3; model.ffn=lowrank): SwiGLU whose two linears are
// each a product of two factors of rank r (model.structured.rank), as in Wei et al. 2024:
//   fc1 (w1 and w3 stacked, [2 hidden, dim]) = B1 A1:  A1 = w13.a [r, dim], B1 = (w1.b; w3.b) [2 hidden, r]
//   fc2 (w2, [dim, hidden])                  = B2 A2:  A2 = w2.a [r, hidden], B2 = w2.b [dim, r]
//   out = residual + B2 A2 (silu(a) * b),  (a, b) = B1 A1 x
// Layers not in model.structured.layers (default: all but layer 0, as the original) are dense
// SwiGLU. Init (model.structured.init): fixed, every factor N(0, 0.02); xavier, N(0, 1 / fan_in)
// per factor; post-init svd (model.structured.post_init), the factors of the truncated SVD of the
// dense layer's Lingua init W (w1 and w3 stacked for fc1): A = sqrt(S_r) V_r^T, B = U_r sqrt(S_r),
// so B A is W's best rank-r approximation (computed on the host with LAPACK's dgesvd, once per
// layer and linear). Forward keeps A1 x [N, r], (a, b) [N, 2 hidden] and A2 g [N, r]; g is recomputed in
// backward, as the dense SwiGLU does.
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/linear.h"
#include "lingua/ops/swiglu/swiglu.h"

// LAPACK (in OpenBLAS): the SVD of a column-major m x n matrix.
extern "C" void dgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, double* a, const int* lda,
                        double* s, double* u, const int* ldu, double* vt, const int* ldvt, double* work,
                        const int* lwork, int* info, size_t jobu_len, size_t jobvt_len);

namespace lingua {

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& args);

namespace {

// A = sqrt(S_r) V_r^T [r, in] and B = U_r sqrt(S_r) [out, r] (row-major) of W [out, in] (row-major).
struct SvdFactors {
  std::vector<double> a, b;
};
SvdFactors truncated_svd_factors(const std::vector<float>& w, int out, int in, int r) {
  // Row-major W is column-major W^T [in, out]: W^T = U' S V'^T, so W = V' S U'^T.
  const int k = std::min(out, in);
  LINGUA_CHECK(r <= k, "config key 'model.structured.rank' is ", r, ": post_init svd needs a rank of at most ", k,
               " (the smaller side of a [", out, ", ", in, "] layer)");
  std::vector<double> m(w.begin(), w.end()), s(k), u((size_t)in * k), vt((size_t)k * out);
  int info = 0, lwork = -1;
  double query = 0;
  dgesvd_("S", "S", &in, &out, m.data(), &in, s.data(), u.data(), &in, vt.data(), &k, &query, &lwork, &info, 1, 1);
  lwork = (int)query;
  std::vector<double> work((size_t)std::max(lwork, 1));
  dgesvd_("S", "S", &in, &out, m.data(), &in, s.data(), u.data(), &in, vt.data(), &k, work.data(), &lwork, &info, 1, 1);
  LINGUA_CHECK(info == 0, "post_init svd: LAPACK dgesvd failed (info ", info, ")");
  SvdFactors f{std::vector<double>((size_t)r * in), std::vector<double>((size_t)out * r)};
  for (int j = 0; j < r; ++j) {
    const double root = std::sqrt(s[j]);
    for (int i = 0; i < in; ++i) f.a[(size_t)j * in + i] = root * u[(size_t)j * in + i];     // U'(i, j)
    for (int o = 0; o < out; ++o) f.b[(size_t)o * r + j] = root * vt[(size_t)o * k + j];  // V'(o, j)
  }
  return f;
}

// The factors of one linear of one layer, computed once (the factor parameters' inits share them).
std::shared_ptr<const SvdFactors> svd_of_dense_init(uint64_t seed, const std::string& key,
                                                    const std::function<std::vector<float>()>& dense, int out, int in,
                                                    int r) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const SvdFactors>> cache;
  const std::string id = std::to_string(seed) + "/" + key + "/" + std::to_string(r);
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[id];
  if (!slot) slot = std::make_shared<const SvdFactors>(truncated_svd_factors(dense(), out, in, r));
  return slot;
}

// The init values a dense parameter of this name and shape would get.
std::vector<float> dense_init(uint64_t seed, const std::string& name, int64_t out, int64_t in, float std) {
  ParamInfo p;
  p.name = name;
  p.shape = p.local_shape = {out, in};
  p.numel = out * in;
  std::vector<float> v((size_t)(out * in));
  ParamInit::trunc_normal(std).fill(seed, p, v.data());
  return v;
}

// A factor's init: rows [row0, row0 + its rows) of `which` (a or b) of the linear's SVD factors.
ParamInit svd_factor_init(const std::string& key, std::function<std::vector<float>(uint64_t)> dense, int out, int in,
                          int r, bool a_factor, int64_t row0) {
  ParamInit init;
  init.what = "svd(" + key + ")";
  init.fill = [=](uint64_t seed, const ParamInfo& p, float* local) {
    const auto f = svd_of_dense_init(seed, key, [&] { return dense(seed); }, out, in, r);
    const std::vector<double>& m = a_factor ? f->a : f->b;
    const int64_t cols = p.shape[1];
    for (int64_t i = 0; i < p.numel; ++i) {
      const int64_t g = p.global_index(i);
      local[i] = g < 0 ? 0.0f : (float)m[(size_t)(row0 * cols + g)];
    }
  };
  return init;
}

std::vector<int> structured_layers(const ModelConfig& c) {
  std::vector<int> layers;
  if (c.ffn != "lowrank") return layers;
  if (!c.structured.layers) {
    for (int l = 1; l < c.n_layers; ++l) layers.push_back(l);
    return layers;
  }
  layers = *c.structured.layers;
  std::sort(layers.begin(), layers.end());
  for (size_t i = 0; i < layers.size(); ++i) {
    LINGUA_CHECK(layers[i] >= 0 && layers[i] < c.n_layers, "config key 'model.structured.layers': layer ", layers[i],
                 " is outside [0, ", c.n_layers, ") (model.n_layers)");
    LINGUA_CHECK(i == 0 || layers[i - 1] != layers[i], "config key 'model.structured.layers': layer ", layers[i],
                 " is listed twice");
  }
  return layers;
}

class LowRankFfn final : public FeedForward {
 public:
  explicit LowRankFfn(const FfnBuildArgs& a) : hidden_(a.dims.hidden), rank_(a.cfg.structured.rank) {
    const int64_t dim = a.dims.dim, H = hidden_, r = rank_;
    const bool xavier = a.cfg.structured.init == "xavier";
    auto spec = [&](const char* name, int64_t out, int64_t in, const char* out_axis, const char* in_axis) {
      ParamSpec p = ffn_weight_spec(a, name, out, in, out_axis, in_axis, 0.02f);
      p.init = ParamInit::normal(xavier ? (float)std::pow((double)in, -0.5) : 0.02f);
      return p;
    };
    ParamSpec s13a = spec("w13.a.weight", r, dim, "rank", "dim"), s1b = spec("w1.b.weight", H, r, "hidden", "rank"),
              s3b = spec("w3.b.weight", H, r, "hidden", "rank"), s2a = spec("w2.a.weight", r, H, "rank", "hidden"),
              s2b = spec("w2.b.weight", dim, r, "dim", "rank");
    if (a.cfg.structured.post_init == "svd") {
      // fc1 = the dense w1 and w3 inits stacked; fc2 = the dense w2 init (Lingua's stds).
      const FfnInitStd std = ffn_init_std(a);
      const std::string p = a.prefix;
      auto fc1 = [p, H, dim, std](uint64_t seed) {
        std::vector<float> w = dense_init(seed, p + "w1.weight", H, dim, std.in);
        const std::vector<float> w3 = dense_init(seed, p + "w3.weight", H, dim, std.in);
        w.insert(w.end(), w3.begin(), w3.end());
        return w;
      };
      auto fc2 = [p, H, dim, std](uint64_t seed) { return dense_init(seed, p + "w2.weight", dim, H, std.out); };
      s13a.init = svd_factor_init(p + "fc1", fc1, (int)(2 * H), (int)dim, (int)r, true, 0);
      s1b.init = svd_factor_init(p + "fc1", fc1, (int)(2 * H), (int)dim, (int)r, false, 0);
      s3b.init = svd_factor_init(p + "fc1", fc1, (int)(2 * H), (int)dim, (int)r, false, H);
      s2a.init = svd_factor_init(p + "fc2", fc2, (int)dim, (int)H, (int)r, true, 0);
      s2b.init = svd_factor_init(p + "fc2", fc2, (int)dim, (int)H, (int)r, false, 0);
    }
    w13a_ = Linear(a.store, s13a);
    w13b_ = Linear(a.store, {s1b, s3b});
    w2a_ = Linear(a.store, s2a);
    w2b_ = Linear(a.store, s2b);
  }

  void forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) override {
    const int64_t n = ctx.rows();
    Arena& sc = *ctx.scratch;
    const size_t mark = sc.mark();  // (without saving, the kept tensors are scratch too)
    Arena& keep = forward_arena(ctx);
    t1_ = arena_tensor(keep, {n, rank_}, ctx.act);
    ab_ = arena_tensor(keep, {n, 2 * hidden_}, ctx.act);
    t2_ = arena_tensor(keep, {n, rank_}, ctx.act);
    Tensor g = arena_tensor(sc, {n, hidden_}, ctx.act);
    w13a_.forward(x, t1_);
    w13b_.forward(t1_, ab_);
    swiglu_forward_packed(ab_, g);
    w2a_.forward(g, t2_);
    w2b_.forward(t2_, out, residual);
    sc.release_to(mark);
  }

  void backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) override {
    const int64_t n = ctx.rows();
    Arena& ar = *ctx.scratch;
    const size_t mark = ar.mark();
    LINGUA_ASSERT(dout.dtype == ctx.act);
    Tensor dt = arena_tensor(ar, {n, rank_}, ctx.act);  // d(A2 g), later d(A1 x)
    Tensor dg = arena_tensor(ar, {n, hidden_}, ctx.act);
    w2b_.backward_input(dout, dt);
    w2b_.backward_weight(t2_, dout);
    w2a_.backward_input(dt, dg);
    swiglu_backward_packed(ab_, dg, ab_, dg);  // ab <- (da, db); dg <- the recomputed g
    w2a_.backward_weight(dg, dt);
    w13b_.backward_input(ab_, dt);
    w13b_.backward_weight(t1_, ab_);
    w13a_.backward(x, dt, dx);
    ar.release_to(mark);
  }

  size_t saved_bytes(int64_t rows, DType act) const override {
    return 2 * arena_bytes(rows * rank_, act) + arena_bytes(rows * 2 * hidden_, act);
  }
  size_t scratch_bytes(int64_t rows, DType act) const override {
    return arena_bytes(rows * rank_, act) + arena_bytes(rows * hidden_, act);
  }
  int64_t matmul_params() const override {
    return w13a_.out() * w13a_.in() + w13b_.out() * w13b_.in() + w2a_.out() * w2a_.in() + w2b_.out() * w2b_.in();
  }
  const char* kind() const override { return "lowrank"; }

 private:
  int64_t hidden_, rank_;
  Linear w13a_, w13b_, w2a_, w2b_;
  Tensor t1_, ab_, t2_;  // saved: A1 x, (a, b), A2 g
};

}  // namespace

std::unique_ptr<FeedForward> make_lowrank_ffn(const FfnBuildArgs& a) {
  const std::vector<int> layers = structured_layers(a.cfg);
  if (!std::binary_search(layers.begin(), layers.end(), a.layer)) return make_swiglu_ffn(a);
  return std::make_unique<LowRankFfn>(a);
}

void check_lowrank_config(const ModelConfig& c, const OptimConfig*) {
  if (c.ffn != "lowrank") return;
  LINGUA_CHECK(c.structured.rank >= 1, "config key 'model.structured.rank' is ", c.structured.rank,
               ": model.ffn=lowrank needs the rank of its factors (1 or more)");
  structured_layers(c);
}

}  // namespace lingua
