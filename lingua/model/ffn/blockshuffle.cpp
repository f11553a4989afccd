// BlockShuffle FFN (structured FFN layers, SPEC §3; model.ffn=blockshuffle): SwiGLU whose two
// linears are each two block-diagonal factors with stride permutations (Monarch-like; Wei et al.
// 2024), k = model.structured.nblocks:
//   y = P_out blockdiag(W2) P_mid blockdiag(W1) x
//   W1 [k, q, in/k] ("<fc>.blocks1.weight"), W2 [k, out/k, q] ("<fc>.blocks2.weight"), with
//   q = in/k when in <= out, else out/k;
//   P_mid: stage-2 block c reads the stage-1 outputs c, c + k, c + 2k, ... (stride_permute by k);
//   P_out: output element a*k + c is element a of stage-2 block c (stride_permute by out/k).
// fc1 = "w13" (in dim, out 2 hidden: (a, b) are the first and last hidden outputs after P_out),
// fc2 = "w2". Forward keeps u = P_mid blockdiag(W1) x [N, k*q] per linear. Layers not in
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
  void forward_unshuffled(const Tensor& x, const Tensor& v, Arena& keep, Arena& scratch) override {
    const int64_t n = x.size(0), mid = k_ * q_;
    u_ = arena_tensor(keep, {n, mid}, x.dtype);
    const size_t mark = scratch.mark();
    Tensor z = arena_tensor(scratch, {n, mid}, x.dtype);
    blockdiag_forward(x, w1_.compute(), z);
    stride_permute(z, k_, u_);
    blockdiag_forward(u_, w2_.compute(), v);
    scratch.release_to(mark);
  }
  int64_t output_shuffle() const override { return k_; }
  void backward_input(const Tensor& dy, const Tensor& dx, Arena& scratch) override {
    Tensor dv = arena_tensor(scratch, {dy.size(0), out_}, dy.dtype);  // (released with dz_ by the caller)
    stride_permute(dy, k_, dv);  // P_out^T
    backward_input_unshuffled(dv, dx, scratch);
  }
  void backward_input_unshuffled(const Tensor& dv, const Tensor& dx, Arena& scratch) override {
    const int64_t n = dv.size(0), mid = k_ * q_;
    dz_ = arena_tensor(scratch, {n, mid}, dv.dtype);  // pending for backward_weight
    const size_t mark = scratch.mark();
    Tensor du = arena_tensor(scratch, {n, mid}, dv.dtype);
    blockdiag_backward(u_, w2_.compute(), dv, du, w2_.grad());
    stride_permute(du, q_, dz_);  // P_mid^T
    blockdiag_backward(Tensor(), w1_.compute(), dz_, dx, Tensor());
    scratch.release_to(mark);
  }
  void backward_weight(const Tensor& x, const Tensor&) override {
    const Tensor g = w1_.grad();
    if (is_given(g)) blockdiag_backward(x, w1_.compute(), dz_, Tensor(), g);
  }
  size_t saved_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * k_ * q_, act); }
  size_t scratch_bytes(int64_t rows, DType act) const override {
    return 2 * arena_bytes(rows * k_ * q_, act) + arena_bytes(rows * out_, act);
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
  Tensor u_, dz_;  // saved: P_mid blockdiag(W1) x; pending from backward_input: dL/d(blockdiag(W1) x)
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
