// BlockShuffle FFN (structured FFN layers, SPEC §3; model.ffn=blockshuffle): SwiGLU whose two
// linears are each two block-diagonal factors with stride permutations (Monarch-like; Wei et al.
// 2024), k = model.structured.nblocks:
//   y = P_out blockdiag(W2) P_mid blockdiag(W1) x
//   W1 [k, q, in/k] ("<fc>.blocks1.weight"), W2 [k, out/k, q] ("<fc>.blocks2.weight"), with
//   q = in/k when in <= out, else out/k;
//   P_mid: stage-2 block c reads the stage-1 outputs c, c + k, c + 2k, ... (stride_permute by k);
//   P_out: output element a*k + c is element a of stage-2 block c (stride_permute by out/k).
// fc1 = "w13" (in dim, out 2 hidden: (a, b) are the first and last hidden outputs after P_out),
// fc2 = "w2". Forward keeps z = blockdiag(W1) x per linear, feature-major [k*q, N], so that the
// second factor reads it through P_mid in place (no permutation pass). Layers not in
// model.structured.layers are dense SwiGLU. Init: fixed N(0, 0.02) or xavier N(0, 1 / fan_in) per
// factor; post_init ortho replaces each block by U V^T of its SVD.
#include "lingua/model/ffn/structured.h"
#include "lingua/ops/blockdiag/blockdiag.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/stride_permute/stride_permute.h"

namespace lingua {

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& args);

namespace {

class BlockShuffleLinear final : public StructuredLinear {
 public:
  BlockShuffleLinear(const FfnBuildArgs& a, const std::string& name, int64_t out, int64_t in, const char* out_axis,
                     const char* in_axis)
      : out_(out), in_(in), k_(a.cfg.structured.nblocks), q_((in <= out ? in : out) / k_) {
    w1_ = FactorParam(a.store, structured_factor_spec(a, name + ".blocks1.weight", {k_, q_, in / k_},
                                                      {"blocks", "mid", in_axis}));
    w2_ = FactorParam(a.store, structured_factor_spec(a, name + ".blocks2.weight", {k_, out / k_, q_},
                                                      {"blocks", out_axis, "mid"}));
  }

  void forward(const Tensor& x, const Tensor& y, const Tensor& residual, Arena& keep, Arena& scratch) override {
    const size_t mark = scratch.mark();
    Tensor v = arena_tensor(scratch, {x.size(0), out_}, x.dtype);
    forward_unshuffled(x, v, keep, scratch);
    stride_permute(v, out_ / k_, y, residual);  // P_out
    scratch.release_to(mark);
  }
  void forward_unshuffled(const Tensor& x, const Tensor& v, Arena& keep, Arena& /*scratch*/) override {
    // z = blockdiag(W1) x is written feature-major ([k*q, N], its columns padded to 16 bytes); stage 2
    // reads it interleaved, which is P_mid without a copy (blockdiag.h).
    zt_ = arena_tensor(keep, {k_ * q_, feature_major_width(x.size(0))}, x.dtype);
    blockdiag_forward(x, w1_.compute(), zt_, BlockLayout::rows, BlockLayout::features);
    blockdiag_forward(zt_, w2_.compute(), v, BlockLayout::interleaved, BlockLayout::rows);
  }
  int64_t output_shuffle() const override { return k_; }
  void backward_input(const Tensor& dy, const Tensor& dx, Arena& scratch) override {
    Tensor dv = arena_tensor(scratch, {dy.size(0), out_}, dy.dtype);  // (released with dzt_ by the caller)
    stride_permute(dy, k_, dv);  // P_out^T
    backward_input_unshuffled(dv, dx, scratch);
  }
  void backward_input_unshuffled(const Tensor& dv, const Tensor& dx, Arena& scratch) override {
    // dz, feature-major like z: stage 2's gradient written interleaved is P_mid^T without a copy.
    dzt_ = arena_tensor(scratch, {k_ * q_, feature_major_width(dv.size(0))}, dv.dtype);  // pending for backward_weight
    blockdiag_backward(zt_, w2_.compute(), dv, dzt_, w2_.grad(), false, BlockLayout::interleaved, BlockLayout::rows);
    blockdiag_backward(Tensor(), w1_.compute(), dzt_, dx, Tensor(), false, BlockLayout::rows, BlockLayout::features);
  }
  void backward_weight(const Tensor& x, const Tensor&) override {
    const Tensor g = w1_.grad();
    if (is_given(g))
      blockdiag_backward(x, w1_.compute(), dzt_, Tensor(), g, false, BlockLayout::rows, BlockLayout::features);
  }
  size_t saved_bytes(int64_t rows, DType act) const override {
    return arena_bytes(feature_major_width(rows) * k_ * q_, act);
  }
  size_t scratch_bytes(int64_t rows, DType act) const override {
    return arena_bytes(feature_major_width(rows) * k_ * q_, act) + arena_bytes(rows * out_, act);
  }
  int64_t matmul_params() const override { return k_ * q_ * (in_ / k_) + out_ * q_; }
  std::vector<double> dense() const override {
    // M = blockdiag(W2) P_mid blockdiag(W1) [out, in], then rows re-interleaved by P_out.
    const std::vector<double> w1 = w1_.host(), w2 = w2_.host();
    const int64_t ib = in_ / k_, ob = out_ / k_;
    std::vector<double> s((size_t)(out_ * in_), 0.0);
    for (int64_t c = 0; c < k_; ++c)
      for (int64_t o = 0; o < ob; ++o) {
        double* srow = s.data() + ((o * k_ + c) * in_);  // P_out: row c*ob + o of M is output o*k + c
        for (int64_t a = 0; a < q_; ++a) {
          const double w = w2[(size_t)((c * ob + o) * q_ + a)];
          const int64_t t = a * k_ + c, b = t / q_, r = t % q_;  // P_mid: stage-1 output t = block b, row r
          const double* w1row = w1.data() + (b * q_ + r) * ib;
          for (int64_t i = 0; i < ib; ++i) srow[b * ib + i] += w * w1row[i];
        }
      }
    return s;
  }

 private:
  int64_t out_, in_, k_, q_;
  FactorParam w1_, w2_;
  Tensor zt_, dzt_;  // saved: blockdiag(W1) x [k*q, L >= N]; pending from backward_input: its gradient, alike
};

}  // namespace

std::unique_ptr<FeedForward> make_blockshuffle_ffn(const FfnBuildArgs& a) {
  if (!is_structured_layer(a, "blockshuffle")) return make_swiglu_ffn(a);
  const int64_t H = a.dims.hidden, dim = a.dims.dim;
  check_divides_blocks(a.cfg, "blockshuffle", dim, "the model width dim");
  check_divides_blocks(a.cfg, "blockshuffle", H, "the FFN hidden width");
  auto fc1 = std::make_unique<BlockShuffleLinear>(a, "w13", 2 * H, dim, "2hidden", "dim");
  auto fc2 = std::make_unique<BlockShuffleLinear>(a, "w2", dim, H, "dim", "hidden");
  return std::make_unique<StructuredFfn>(a, "blockshuffle", std::move(fc1), std::move(fc2));
}

void check_blockshuffle_config(const ModelConfig& c, const OptimConfig*) {
  check_structured_keys(c, "blockshuffle", false, true, "ortho");
}

}  // namespace lingua
