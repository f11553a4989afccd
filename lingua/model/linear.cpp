#include "lingua/model/linear.h"

#include <atomic>

#include "lingua/model/probe_observer.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace {
std::atomic<uint64_t> g_weight_grad_matmuls{0};
}  // namespace

uint64_t Linear::weight_grad_matmuls() { return g_weight_grad_matmuls.load(); }

ProbeObserver*& probe_observer() {
  thread_local ProbeObserver* observer = nullptr;
  return observer;
}

Linear::Linear(ParamStore& store, ParamSpec spec) : Linear(store, std::vector<ParamSpec>{std::move(spec)}) {}

Linear::Linear(ParamStore& store, std::vector<ParamSpec> stacked) : store_(&store) {
  LINGUA_CHECK(!stacked.empty(), "internal error: a Linear without weights");
  const ParamSpec first = stacked[0];
  for (ParamSpec& s : stacked) {
    LINGUA_CHECK(s.shape.size() == 2, "internal error: Linear weight '", s.name, "' is not [out, in]");
    LINGUA_CHECK(ids_.empty() || (s.shape[1] == in_ && s.trainable == first.trainable &&
                                  s.compute_copy == first.compute_copy && s.group == first.group),
                 "internal error: stacked Linear weight '", s.name, "' differs from the first in shape[1], "
                 "trainability, group or compute copy");
    in_ = s.shape[1];
    out_ += s.shape[0];
    ids_.push_back(store.add(std::move(s)));
  }
}

Linear Linear::shared(ParamStore& store, int id) {
  Linear l;
  const ParamInfo& p = store.info(id);
  LINGUA_CHECK(p.local_shape.size() == 2, "internal error: Linear over '", p.name, "', which is not [out, in]");
  l.store_ = &store;
  l.ids_ = {id};
  l.out_ = p.local_shape[0];
  l.in_ = p.local_shape[1];
  return l;
}

Tensor Linear::stacked(const Tensor& first) const {
  if (ids_.size() == 1) return first;
  // One matrix only while the weights are adjacent in every buffer and share their trainability
  // (ParamStore::set_trainable can freeze one of them after the fact).
  for (size_t k = 1; k < ids_.size(); ++k) {
    const ParamInfo &a = store_->info(ids_[k - 1]), &b = store_->info(ids_[k]);
    LINGUA_CHECK(a.trainable == b.trainable, "weights '", a.name, "' and '", b.name,
                 "' are multiplied as one matrix: freeze or train them together");
    LINGUA_CHECK(b.offset == a.offset + a.numel && (a.grad_offset < 0 || b.grad_offset == a.grad_offset + a.numel) &&
                     (a.bf16_offset < 0 || b.bf16_offset == a.bf16_offset + a.numel),
                 "internal error: stacked weights '", a.name, "' and '", b.name, "' are not adjacent");
  }
  if (!is_given(first)) return first;
  return Tensor(first.data, {out_, in_}, first.dtype, first.device);
}

std::string weight_base_name(std::string n) {
  if (n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0) n.resize(n.size() - 7);
  return n;
}

std::string Linear::name() const { return weight_base_name(store_->info(ids_[0]).name); }

Tensor Linear::compute_weight() const { return stacked(store_->compute_param(ids_[0])); }
Tensor Linear::grad() const { return stacked(store_->grad(ids_[0])); }
bool Linear::frozen() const { return !store_->trainable(ids_[0]); }

void Linear::forward(const Tensor& x, const Tensor& y, const Tensor& residual) const {
  linear_forward(x, compute_weight(), y, residual);
  if (ProbeObserver* o = probe_observer()) {
    if (!is_given(residual)) return o->linear_forward(*this, x, y);
    const Tensor alone = o->scratch_like(y);  // the product without the residual, for the probe only
    linear_forward(x, compute_weight(), alone);
    o->linear_forward(*this, x, alone);
  }
}

void Linear::backward(const Tensor& x, const Tensor& dy, const Tensor& dx, bool accumulate_dx) const {
  if (ProbeObserver* o = probe_observer()) o->linear_backward(*this, dy);
  const Tensor dw = grad();
  if (!is_given(dw) && !is_given(dx)) return;
  if (is_given(dw)) ++g_weight_grad_matmuls;
  linear_backward(x, compute_weight(), dy, dx, dw, accumulate_dx);
}

void Linear::backward_input(const Tensor& dy, const Tensor& dx, bool accumulate_dx) const {
  if (ProbeObserver* o = probe_observer()) o->linear_backward(*this, dy);
  // x is not read without a weight gradient: dx stands in for its shape.
  linear_backward(dx, compute_weight(), dy, dx, Tensor(), accumulate_dx);
}

void Linear::backward_weight(const Tensor& x, const Tensor& dy) const {
  const Tensor dw = grad();
  if (!is_given(dw)) return;
  ++g_weight_grad_matmuls;
  linear_backward(x, compute_weight(), dy, Tensor(), dw);
}

}  // namespace lingua
