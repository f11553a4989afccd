#include <cmath>
#include <utility>

#include "lingua/model/ffn/ffn.h"

namespace lingua {

// One line per FFN variant.
static const std::pair<const char*, FfnFactory> kFfnRegistry[] = {
    {"swiglu", make_swiglu_ffn},
    {"stem", make_stem_ffn},
};

FfnInitStd ffn_init_std(const FfnBuildArgs& a) {
  const double factor = init_std_factor(a.cfg.init_std_factor, a.layer, a.dims.n_layers, a.dims.dim);
  return {(float)a.cfg.init_base_std.value_or(std::pow(a.dims.dim, -0.5)),
          (float)(a.cfg.init_base_std.value_or(std::pow(a.dims.hidden, -0.5)) / factor)};
}

std::vector<std::string> ffn_kinds() {
  std::vector<std::string> k;
  for (auto& [name, f] : kFfnRegistry) k.push_back(name);
  return k;
}

std::unique_ptr<FeedForward> make_ffn(const std::string& kind, const FfnBuildArgs& args) {
  for (auto& [name, factory] : kFfnRegistry)
    if (kind == name) return factory(args);
  std::string valid;
  for (auto& n : ffn_kinds()) valid += (valid.empty() ? "" : ", ") + n;
  fail("config key 'model.ffn': unknown FFN variant '", kind, "'; registered: ", valid);
}

}  // namespace lingua
