// STEM FFN (SPEC §2): the up-projection w3 x of SwiGLU is replaced by a row of a per-layer table
// indexed by the input token at the same position:
//   out = w2(silu(w1 x) * E[token])
// E: [vocab, hidden] f32, its own optimizer group ("stem"), an embedding for the accounting (memory,
// not FLOPs). Layers not in model.stem_layers are dense SwiGLU.
// Sharding (a later layer, over distributed.stem_parallel_size ranks) splits the table by columns:
// a rank declares its [vocab, hidden / P] slice as the parameter, and the gather and scatter-add
// ops take any column count; the all-to-all of rows goes between them and the gate product.
#include <cmath>

#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/ops/embedding/embedding.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {
namespace {

class StemFfn final : public FeedForward {
 public:
  explicit StemFfn(const FfnBuildArgs& a) : store_(a.store), dim_(a.dims.dim), hidden_(a.dims.hidden) {
    // w1, w2 as Lingua's SwiGLU; the table as Xavier normal on [vocab, hidden].
    const FfnInitStd init = ffn_init_std(a);
    const float table_std = (float)std::sqrt(2.0 / ((double)a.dims.vocab + (double)hidden_));
    w1_ = a.store.add(a.prefix + "w1.weight", {hidden_, dim_}, {ParamInit::trunc_normal, init.in});
    w2_ = a.store.add(a.prefix + "w2.weight", {dim_, hidden_}, {ParamInit::trunc_normal, init.out});
    // Gathered from the fp32 weights (no bf16 copy): a step reads only its tokens' rows.
    table_ = a.store.add(a.prefix + "stem_embedding.weight", {(int64_t)a.dims.vocab, hidden_},
                         {ParamInit::normal, table_std}, kStemGroup, /*embedding=*/true, /*compute_copy=*/false);
  }

  void forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) override {
    const int64_t n = ctx.rows();
    Arena& sc = *ctx.scratch;
    size_t mark = sc.mark();
    a_ = arena_tensor(forward_arena(ctx), {n, hidden_}, ctx.act);  // w1 x, kept
    // e = E[token] (not kept: backward gathers it again, as cheap as reading it back), then
    // g = silu(a) * e written over it.
    Tensor e = arena_tensor(sc, {n, hidden_}, ctx.act);
    linear_forward(x, store_.compute_param(w1_), a_);
    embedding_forward(ctx.tokens, store_.param(table_), e);
    swiglu_forward(a_, e, e);
    linear_forward(e, store_.compute_param(w2_), out, residual);
    sc.release_to(mark);
  }

  void backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) override {
    const int64_t n = ctx.rows();
    Arena& ar = *ctx.scratch;
    size_t mark = ar.mark();
    LINGUA_ASSERT(dout.dtype == ctx.act);
    // dg = dout W2; one pass then writes da over a, de over e and the recomputed g over dg.
    Tensor dg = arena_tensor(ar, {n, hidden_}, ctx.act);
    Tensor e = arena_tensor(ar, {n, hidden_}, ctx.act);
    linear_backward(dg, store_.compute_param(w2_), dout, dg, Tensor());
    embedding_forward(ctx.tokens, store_.param(table_), e);
    swiglu_backward(a_, e, dg, a_, e, dg);
    linear_backward(dg, store_.compute_param(w2_), dout, Tensor(), store_.grad(w2_));
    embedding_backward(ctx.tokens, e, store_.grad(table_));  // deterministic scatter-add of de
    linear_backward(x, store_.compute_param(w1_), a_, dx, store_.grad(w1_));
    ar.release_to(mark);
  }

  size_t saved_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * hidden_, act); }
  size_t scratch_bytes(int64_t rows, DType act) const override {
    return 2 * arena_bytes(rows * hidden_, act);
  }
  // The table is looked up, not multiplied: w1 and w2 only.
  int64_t matmul_params() const override { return 2LL * dim_ * hidden_; }

 private:
  ParamStore& store_;
  int64_t dim_, hidden_;
  int w1_, w2_, table_;
  Tensor a_;  // saved: [N, hidden] w1 x
};

}  // namespace

std::unique_ptr<FeedForward> make_stem_ffn(const FfnBuildArgs& a) {
  if (!a.dims.is_stem_layer(a.layer)) return make_swiglu_ffn(a);
  return std::make_unique<StemFfn>(a);
}

}  // namespace lingua
