#include <utility>

#include "lingua/model/ffn/ffn.h"

namespace lingua {

// One line per FFN variant.
static const std::pair<const char*, FfnFactory> kFfnRegistry[] = {
    {"swiglu", make_swiglu_ffn},
    {"stem", make_stem_ffn},
};

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
