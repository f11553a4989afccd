#include "lingua/train/nonfinite.h"

#include <cmath>
#include <sstream>
#include <vector>

namespace lingua {

namespace {

// The first tensor (in layout order) with non-finite values among `values` at each parameter's
// offset, and how many tensors have any.
std::string first_nonfinite(const ParamStore& store, const std::vector<float>& values, bool grads) {
  std::string first;
  int tensors = 0;
  for (int id : store.ids()) {
    const ParamInfo& p = store.info(id);
    const int64_t off = grads ? p.grad_offset : p.offset;
    if (off < 0) continue;  // frozen: no gradient
    int64_t bad = 0;
    for (int64_t i = 0; i < p.numel; ++i) bad += !std::isfinite(values[off + i]);
    if (!bad) continue;
    if (tensors++ == 0)
      first = "'" + p.name + "' (" + std::to_string(bad) + " of " + std::to_string(p.numel) + " values)";
  }
  if (!tensors) return "";
  return first + (tensors > 1 ? "; " + std::to_string(tensors) + " tensors in all" : "");
}

std::string number(double x) {
  if (std::isnan(x)) return "nan";  // not "-nan"
  std::ostringstream os;
  os << x;
  return os.str();
}

}  // namespace

bool step_is_finite(double loss, const std::map<std::string, double>& grad_norms) {
  if (!std::isfinite(loss)) return false;
  for (auto& [g, n] : grad_norms)
    if (!std::isfinite(n)) return false;
  return true;
}

std::string describe_nonfinite(const ParamStore& store, double loss, const std::map<std::string, double>& grad_norms) {
  std::ostringstream os;
  os << "the loss is " << number(loss);
  for (auto& [g, n] : grad_norms)
    if (!std::isfinite(n)) os << ", the gradient norm of group '" << g << "' is " << number(n);
  const std::string w = first_nonfinite(store, store.host_values(), false);
  if (!w.empty()) os << "; the weights are already not finite: the first is " << w;
  if (store.grads_data()) {
    const std::string g = first_nonfinite(store, store.host_grads(), true);
    if (!g.empty()) os << "; the first non-finite gradient is " << g;
  }
  return os.str();
}

}  // namespace lingua
