// LowRank FFN (structured FFN layers, SPEC §3; model.ffn=lowrank): SwiGLU whose two linears are
// each a product of two factors of rank r (model.structured.rank), as in Wei et al. 2024:
//   fc1 (w1 and w3 stacked, [2 hidden, dim]) = B1 A1:  A1 = w13.a [r, dim], B1 = (w1.b; w3.b) [2 hidden, r]
//   fc2 (w2, [dim, hidden])                  = B2 A2:  A2 = w2.a [r, hidden], B2 = w2.b [dim, r]
//   out = residual + B2 A2 (silu(a) * b),  (a, b) = B1 A1 x
// Layers not in model.structured.layers (default: all but layer 0, as the original) are dense
// SwiGLU. Init (model.structured.init): fixed, every factor N(0, 0.02); xavier, N(0, 1 / fan_in)
// per factor. Forward keeps A1 x [N, r], (a, b) [N, 2 hidden] and A2 g [N, r]; g is recomputed in
// backward, as the dense SwiGLU does.
#include <algorithm>
#include <cmath>

#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/linear.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& args);

namespace {

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
    w13a_ = Linear(a.store, spec("w13.a.weight", r, dim, "rank", "dim"));
    w13b_ = Linear(a.store, {spec("w1.b.weight", H, r, "hidden", "rank"), spec("w3.b.weight", H, r, "hidden", "rank")});
    w2a_ = Linear(a.store, spec("w2.a.weight", r, H, "rank", "hidden"));
    w2b_ = Linear(a.store, spec("w2.b.weight", dim, r, "dim", "rank"));
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
