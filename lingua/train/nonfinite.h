#pragma once
// What went wrong in a step whose loss or gradient norm is NaN or inf: which tensors hold
// non-finite values (weights first, then gradients), for the trainer's message.
#include <map>
#include <string>

#include "lingua/model/param_store.h"

namespace lingua {

// True when the loss and every group's gradient norm are finite.
bool step_is_finite(double loss, const std::map<std::string, double>& grad_norms);

// E.g. "the gradient norm is nan (group 'default'); the first non-finite gradient is
// 'layers.1.feed_forward.w2.weight' (12 of 4096 values; 9 tensors in all)". Copies the weights
// and gradients to the host: call it only after a non-finite step.
std::string describe_nonfinite(const ParamStore& store, double loss, const std::map<std::string, double>& grad_norms);

}  // namespace lingua
