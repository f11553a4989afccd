#include <cmath>

#include "lingua/model/ffn/ffn.h"

namespace lingua {

// The variants (one file each).
std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& args);
std::unique_ptr<FeedForward> make_stem_ffn(const FfnBuildArgs& args);
void check_stem_config(const ModelConfig& cfg, const OptimConfig* optim);
const FfnHfForm* stem_hf_form();
std::unique_ptr<FeedForward> make_lowrank_ffn(const FfnBuildArgs& args);
void check_lowrank_config(const ModelConfig& cfg, const OptimConfig* optim);
std::unique_ptr<FeedForward> make_blockdense_ffn(const FfnBuildArgs& args);
void check_blockdense_config(const ModelConfig& cfg, const OptimConfig* optim);
std::unique_ptr<FeedForward> make_blockshuffle_ffn(const FfnBuildArgs& args);
void check_blockshuffle_config(const ModelConfig& cfg, const OptimConfig* optim);

namespace {

struct FfnEntry {
  const char* name;
  FfnFactory make;
  FfnConfigCheck check;  // may be null
  FfnHfFormFn hf_form = nullptr;  // how its models look in a Hugging Face directory (null: merged or dense)
};

// One line per FFN variant.
const FfnEntry kFfnRegistry[] = {
    {"swiglu", make_swiglu_ffn, nullptr},
    {"stem", make_stem_ffn, check_stem_config, stem_hf_form},
    {"lowrank", make_lowrank_ffn, check_lowrank_config},
    {"blockdense", make_blockdense_ffn, check_blockdense_config},
    {"blockshuffle", make_blockshuffle_ffn, check_blockshuffle_config},
};

}  // namespace

FfnInitStd ffn_init_std(const FfnBuildArgs& a) {
  const double factor = init_std_factor(a.cfg.init_std_factor, a.layer, a.dims.n_layers, a.dims.dim);
  return {(float)a.cfg.init_base_std.value_or(std::pow(a.dims.dim, -0.5)),
          (float)(a.cfg.init_base_std.value_or(std::pow(a.dims.hidden, -0.5)) / factor)};
}

ParamSpec ffn_weight_spec(const FfnBuildArgs& a, const char* name, int64_t out, int64_t in, const char* out_axis,
                          const char* in_axis, float std) {
  ParamSpec p;
  p.name = a.prefix + name;
  p.shape = {out, in};
  p.axes = {out_axis, in_axis};
  p.init = ParamInit::trunc_normal(std);
  return p;
}

std::vector<std::string> ffn_kinds() {
  std::vector<std::string> k;
  for (const FfnEntry& e : kFfnRegistry) k.push_back(e.name);
  return k;
}

void check_ffn_config(const ModelConfig& cfg, const OptimConfig* optim) {
  bool known = false;
  for (const FfnEntry& e : kFfnRegistry) {
    known = known || cfg.ffn == e.name;
    if (e.check) e.check(cfg, optim);
  }
  if (known) return;
  std::string valid;
  for (auto& n : ffn_kinds()) valid += (valid.empty() ? "" : ", ") + n;
  fail("config key 'model.ffn': unknown FFN variant '", cfg.ffn, "'; registered: ", valid);
}

std::vector<const FfnHfForm*> ffn_hf_forms() {
  std::vector<const FfnHfForm*> forms;
  for (const FfnEntry& e : kFfnRegistry)
    if (e.hf_form) forms.push_back(e.hf_form());
  return forms;
}

const FfnHfForm* ffn_hf_form(const std::string& ffn) {
  for (const FfnHfForm* f : ffn_hf_forms())
    if (f->ffn == ffn) return f;
  return nullptr;
}

const FfnHfForm* ffn_hf_form_of_model_type(const std::string& model_type) {
  for (const FfnHfForm* f : ffn_hf_forms())
    if (f->model_type == model_type) return f;
  return nullptr;
}

std::unique_ptr<FeedForward> make_ffn(const std::string& kind, const FfnBuildArgs& args) {
  for (const FfnEntry& e : kFfnRegistry)
    if (kind == e.name) return e.make(args);
  std::string valid;
  for (auto& n : ffn_kinds()) valid += (valid.empty() ? "" : ", ") + n;
  fail("config key 'model.ffn': unknown FFN variant '", kind, "'; registered: ", valid);
}

}  // namespace lingua
