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
// layer and linear). Each linear is a StructuredLinear of StructuredFfn (structured.h), which keeps
// A1 x [N, r], (a, b) [N, 2 hidden] and A2 g [N, r]; g is recomputed in backward.
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/ffn/structured.h"
#include "lingua/model/linear.h"

namespace lingua {

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& args);

namespace {

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
  return whole_init_values(ParamInit::trunc_normal(std), seed, name, {out, in});
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

// y = B (A x): A [r, in] (one parameter), B [out, r] (one or more stacked by rows).
class LowRankLinear final : public StructuredLinear {
 public:
  LowRankLinear(ParamStore& store, ParamSpec a, std::vector<ParamSpec> b)
      : a_(store, std::move(a)), b_(store, std::move(b)), store_(&store) {}

  void forward(const Tensor& x, const Tensor& y, const Tensor& residual, Arena& keep, Arena&) override {
    t_ = arena_tensor(keep, {x.size(0), a_.out()}, x.dtype);
    a_.forward(x, t_);
    b_.forward(t_, y, residual);
  }
  void backward_input(const Tensor& dy, const Tensor& dx, Arena& scratch) override {
    dt_ = arena_tensor(scratch, {dy.size(0), a_.out()}, dy.dtype);
    b_.backward_input(dy, dt_);
    b_.backward_weight(t_, dy);
    a_.backward_input(dt_, dx);
  }
  void backward_weight(const Tensor& x, const Tensor&) override { a_.backward_weight(x, dt_); }
  size_t saved_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * a_.out(), act); }
  size_t scratch_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * a_.out(), act); }
  int64_t matmul_params() const override { return a_.out() * a_.in() + b_.out() * b_.in(); }
  std::vector<double> dense() const override {
    auto host = [&](const Linear& l) {
      std::vector<double> v;
      for (int id : l.params()) {
        const std::vector<double> p = FactorParam(*store_, id).host();
        v.insert(v.end(), p.begin(), p.end());
      }
      return v;
    };
    return dense_times_blockdiag(host(b_), host(a_), b_.out(), 1, a_.out(), a_.in());
  }

 private:
  Linear a_, b_;
  ParamStore* store_;
  Tensor t_, dt_;  // saved: A x; pending from backward_input: dL/d(A x)
};

std::unique_ptr<FeedForward> make_lowrank_layer(const FfnBuildArgs& a) {
  const int64_t dim = a.dims.dim, H = a.dims.hidden, r = a.cfg.structured.rank;
  auto spec = [&](const char* name, int64_t out, int64_t in, const char* out_axis, const char* in_axis) {
    return structured_factor_spec(a, name, {out, in}, {out_axis, in_axis});
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
  auto fc1 = std::make_unique<LowRankLinear>(a.store, s13a, std::vector<ParamSpec>{s1b, s3b});
  auto fc2 = std::make_unique<LowRankLinear>(a.store, s2a, std::vector<ParamSpec>{s2b});
  return std::make_unique<StructuredFfn>(a, "lowrank", std::move(fc1), std::move(fc2));
}

}  // namespace

std::unique_ptr<FeedForward> make_lowrank_ffn(const FfnBuildArgs& a) {
  if (!is_structured_layer(a, "lowrank")) return make_swiglu_ffn(a);
  return make_lowrank_layer(a);
}

void check_lowrank_config(const ModelConfig& c, const OptimConfig*) {
  check_structured_keys(c, "lowrank", true, false, "svd");
}

}  // namespace lingua
