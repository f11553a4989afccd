// Self-guided training of a structured linear (SPEC §3; model.structured.self_guided): beside its
// factors S, a dense guide W [out, in] ("<fc>.guide.weight"), initialised to S's dense form and
// trained by the same optimizer, and the output
//   y = alpha W x + (1 - alpha) S x,   alpha = 1 at step 0, 0 at step max_step (cosine or linear)
// over optimizer steps 0 .. max_step - 1. At step max_step the guide parameter is removed from
// the store (its weights, gradient and AdamW moments freed). alpha is a per-step scalar on the
// device (StepScalars), so a captured step reads each step's value. With reduce_flop a training
// step runs the guide only when u < alpha, u uniform from Philox keyed by (model.seed, the guide's
// name, the step): every rank and every resumed run draws the same; otherwise the step computes
// S x alone (the guide gets a zero gradient that step; AdamW still applies its moments and weight
// decay). Forwards that do not train (evaluation, generation) always mix with the step's alpha.
#include <cmath>

#include "lingua/core/philox.h"
#include "lingua/model/ffn/structured.h"
#include "lingua/model/linear.h"
#include "lingua/ops/guide_mix/guide_mix.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {

class GuidedLinear final : public GuidedStructuredLinear {
 public:
  GuidedLinear(const FfnBuildArgs& a, const std::string& fc, int64_t out, int64_t in, const char* out_axis,
               const char* in_axis, int after, std::unique_ptr<StructuredLinear> inner)
      : inner_(std::move(inner)), store_(&a.store), cfg_(a.cfg.structured.self_guided), seed_((uint64_t)a.cfg.seed),
        out_(out), in_(in), after_(after) {
    spec_.name = a.prefix + fc + ".guide.weight";
    spec_.shape = {out, in};
    spec_.axes = {out_axis, in_axis};
    spec_.init.what = "the dense form of " + a.prefix + fc;
    spec_.init.fill = [this](uint64_t, const ParamInfo& p, float* local) {
      const std::vector<double> s = inner_->dense();
      for (int64_t i = 0; i < p.numel; ++i) {
        const int64_t g = p.global_index(i);
        local[i] = g < 0 ? 0.0f : (float)s[(size_t)g];
      }
    };
    guide_ = Linear(a.store, spec_);
    present_ = true;
    alpha_slot_ = a.store.step_scalars().slot("self_guided.alpha", sizeof(float), StepScalars::Writer::host);
    set_alpha(alpha_at(0));
  }

  void begin_step(int64_t step) override {
    if (step >= cfg_.max_step) {
      if (present_) {
        store_->remove(guide_.params()[0]);
        guide_ = Linear();
        present_ = false;
      }
      alpha_ = 0;
      run_ = false;
      return;
    }
    if (!present_) {  // back to a guided step (resuming from an older checkpoint, which sets its values)
      guide_ = Linear::shared(*store_, store_->add(spec_, after_));
      present_ = true;
    }
    set_alpha(alpha_at(step));
    run_ = !cfg_.reduce_flop || draw(step) < alpha_;
  }

  void set_training(bool training) override { training_ = training; }
  bool present() const override { return present_; }
  bool runs(bool training) const override { return present_ && (run_ || !training); }
  double alpha() const override { return alpha_; }
  int64_t guide_params() const override { return out_ * in_; }

  void forward(const Tensor& x, const Tensor& y, const Tensor& residual, Arena& keep, Arena& scratch) override {
    if (!runs(training_)) return inner_->forward(x, y, residual, keep, scratch);
    const size_t mark = scratch.mark();
    const int64_t n = x.size(0);
    // s = S x in y itself when y is a plain act-dtype output, else in scratch.
    const bool in_y = !is_given(residual) && y.dtype == x.dtype;
    Tensor s = in_y ? y : arena_tensor(scratch, {n, out_}, x.dtype);
    inner_->forward(x, s, Tensor(), keep, scratch);
    Tensor w = arena_tensor(scratch, {n, out_}, x.dtype);
    guide_.forward(x, w);
    guide_mix_forward(s, w, alpha_ptr(), y, residual);
    if (&keep != &scratch) scratch.release_to(mark);  // (else S's kept tensors live in scratch)
  }
  void backward_input(const Tensor& dy, const Tensor& dx, Arena& scratch) override {
    if (!runs(training_)) return inner_->backward_input(dy, dx, scratch);
    const int64_t n = dy.size(0);
    ds_ = arena_tensor(scratch, {n, out_}, dy.dtype);  // pending for backward_weight
    dw_ = arena_tensor(scratch, {n, out_}, dy.dtype);
    guide_mix_backward(dy, alpha_ptr(), ds_, dw_);
    inner_->backward_input(ds_, dx, scratch);
    guide_.backward_input(dw_, dx, /*accumulate_dx=*/true);
  }
  void backward_weight(const Tensor& x, const Tensor& dy) override {
    if (!runs(training_)) return inner_->backward_weight(x, dy);
    inner_->backward_weight(x, ds_);
    guide_.backward_weight(x, dw_);
  }
  size_t saved_bytes(int64_t rows, DType act) const override { return inner_->saved_bytes(rows, act); }
  size_t scratch_bytes(int64_t rows, DType act) const override {
    return inner_->scratch_bytes(rows, act) + (present_ ? 2 * arena_bytes(rows * out_, act) : 0);
  }
  int64_t matmul_params() const override { return inner_->matmul_params() + (runs(true) ? out_ * in_ : 0); }
  // The function a forward that does not train computes: alpha W + (1 - alpha) S.
  std::vector<double> dense() const override {
    std::vector<double> s = inner_->dense();
    if (!present_) return s;
    const std::vector<double> w = FactorParam(*store_, guide_.params()[0]).host();
    for (size_t i = 0; i < s.size(); ++i) s[i] = alpha_ * w[i] + (1.0 - alpha_) * s[i];
    return s;
  }

 private:
  double alpha_at(int64_t step) const {
    const double t = std::min(1.0, (double)step / (double)cfg_.max_step);
    return cfg_.scheduler == "linear" ? 1.0 - t : 0.5 * (1.0 + std::cos(M_PI * t));
  }
  void set_alpha(double a) {
    alpha_ = a;
    *store_->step_scalars().staged<float>(alpha_slot_) = (float)a;
  }
  const float* alpha_ptr() const { return store_->step_scalars().at<float>(alpha_slot_); }
  double draw(int64_t step) const {
    uint32_t c[4] = {(uint32_t)step, (uint32_t)((uint64_t)step >> 32), 0x5e1f6u, name_stream_id(spec_.name)};
    philox4x32_10(c, (uint32_t)seed_, (uint32_t)(seed_ >> 32));
    return (double)u32_to_unit(c[0]);
  }

  std::unique_ptr<StructuredLinear> inner_;
  ParamStore* store_;
  SelfGuidedConfig cfg_;
  uint64_t seed_;
  int64_t out_, in_;
  int after_;  // the parameter the guide follows in the layout (re-added there)
  ParamSpec spec_;
  Linear guide_;
  bool present_ = false, run_ = true, training_ = true;
  double alpha_ = 1;
  size_t alpha_slot_ = 0;
  Tensor ds_, dw_;  // pending from backward_input: (1 - alpha) dy and alpha dy
};

}  // namespace

std::unique_ptr<GuidedStructuredLinear> make_guided_linear(const FfnBuildArgs& a, const std::string& fc, int64_t out,
                                                           int64_t in, const char* out_axis, const char* in_axis,
                                                           int after, std::unique_ptr<StructuredLinear> inner) {
  return std::make_unique<GuidedLinear>(a, fc, out, in, out_axis, in_axis, after, std::move(inner));
}

}  // namespace lingua
