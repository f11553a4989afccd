#include "lingua/model/module_tokens.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "lingua/ops/prefix_mix/prefix_mix.h"

namespace lingua {

namespace {

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(std::isalnum((unsigned char)c) || c == '_' || c == '-')) return false;
  return true;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "none" : s;
}

const std::string kInfix = ".modules.";

}  // namespace

void check_module_config(const ModelConfig& c) {
  LINGUA_CHECK(c.module_seq_len >= 0, "config key 'model.module_seq_len' must be >= 0, got ", c.module_seq_len);
  std::set<std::string> held;
  for (const std::string& n : c.modules) {
    LINGUA_CHECK(valid_name(n), "config key 'model.modules': module name '", n,
                 "' must be 1-64 letters, digits, '_' or '-' (it becomes part of tensor names)");
    LINGUA_CHECK(held.insert(n).second, "config key 'model.modules' names module '", n, "' twice");
  }
  LINGUA_CHECK(held.empty() || c.module_seq_len > 0, "config key 'model.module_seq_len' is 0 but model.modules holds ",
               joined(c.modules), ": set the rows per module (e.g. 16)");
  if (c.enabled_modules) {
    std::set<std::string> seen;
    for (const std::string& n : *c.enabled_modules) {
      LINGUA_CHECK(held.count(n), "config key 'model.enabled_modules': no module '", n, "' in this model (it holds ",
                   joined(c.modules), ")");
      LINGUA_CHECK(seen.insert(n).second, "config key 'model.enabled_modules' names module '", n, "' twice");
    }
  }
  if (!c.create_module_name.empty())
    LINGUA_CHECK(held.count(c.create_module_name), "config key 'model.create_module_name': module '",
                 c.create_module_name, "' is not in model.modules (",
                 joined(c.modules), "); a config read from a file or params.json adds it");
}

std::string module_param_name(int layer, const std::string& name) {
  return "layers." + std::to_string(layer) + kInfix + name;
}

bool is_module_param(const std::string& p, std::string* module) {
  if (p.rfind("layers.", 0) != 0) return false;
  const size_t at = p.find(kInfix);
  if (at == std::string::npos || p.find_first_not_of("0123456789", 7) != at) return false;
  if (module) *module = p.substr(at + kInfix.size());
  return true;
}

ModuleTokens::ModuleTokens(const ModelConfig& cfg, const ModelDims& dims)
    : M_(cfg.module_seq_len),
      dim_(dims.dim),
      n_layers_(dims.n_layers),
      agg_(cfg.module_agg),
      created_(cfg.create_module_name),
      names_(cfg.modules) {
  check_module_config(cfg);
  // Module rows are added to the residual stream as the token embeddings are: their init scale.
  init_std_ = (float)cfg.init_base_std.value_or(std::pow(dims.dim, -0.5));
  std::vector<std::string> on = cfg.enabled_modules ? *cfg.enabled_modules : cfg.modules;
  std::sort(on.begin(), on.end());
  for (const std::string& n : on) {
    enabled_.push_back((int)(std::find(names_.begin(), names_.end(), n) - names_.begin()));
    enabled_names_.push_back(n);
  }
  ids_.assign(names_.size(), std::vector<int>(n_layers_, -1));
}

void ModuleTokens::declare_layer(ParamStore& store, int layer) {
  store_ = &store;
  if (!has_params(layer)) return;
  for (size_t k = 0; k < names_.size(); ++k) {
    ParamSpec p;
    p.name = module_param_name(layer, names_[k]);
    p.shape = {M_, dim_};
    p.axes = {"module_rows", "dim"};
    p.init = ParamInit::trunc_normal(init_std_);
    p.compute_copy = false;  // added to the fp32 stream, never multiplied
    ids_[k][layer] = store.add(std::move(p));
  }
}

void ModuleTokens::freeze(ParamStore& store) const {
  std::vector<bool> runs(names_.size(), false);
  for (int k : enabled_) runs[k] = true;
  for (int id : store.ids()) {
    std::string module;
    const bool is_module = is_module_param(store.info(id).name, &module);
    if (is_module) {
      const int k = (int)(std::find(names_.begin(), names_.end(), module) - names_.begin());
      if (!runs[k] || (!created_.empty() && module != created_)) store.set_trainable(id, false);
    } else if (!created_.empty()) {
      store.set_trainable(id, false);
    }
  }
}

float ModuleTokens::stream_weight(int l) const {
  if (l == 0 || agg_ == "drop") return 0.0f;
  if (agg_ == "stack" || agg_ == "sum") return 1.0f;
  if (agg_ == "avg") return 0.5f;
  return (float)l / (float)(l + 1);  // mean
}

float ModuleTokens::param_weight(int l) const {
  if (l == 0 || agg_ == "drop" || agg_ == "sum") return 1.0f;
  if (agg_ == "stack") return 0.0f;
  if (agg_ == "avg") return 0.5f;
  return 1.0f / (float)(l + 1);  // mean
}

void ModuleTokens::forward_rows(int layer, const Tensor& x, const StepContext& ctx) const {
  if (ctx.seq.prefix == 0 || !has_params(layer)) return;
  LINGUA_CHECK(ctx.seq.prefix == prefix_rows(), "internal error: ", ctx.seq.prefix, " prefix rows for ",
               prefix_rows(), " module rows");
  for (size_t j = 0; j < enabled_.size(); ++j)
    prefix_mix_forward(x, store_->param(ids_[enabled_[j]][layer]), ctx.seq.S(), (int64_t)j * M_, stream_weight(layer),
                       param_weight(layer));
}

void ModuleTokens::backward_rows(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) const {
  if (ctx.seq.prefix == 0 || !has_params(layer)) return;
  for (size_t j = 0; j < enabled_.size(); ++j)
    prefix_mix_backward(dx, dx_act, store_->grad(ids_[enabled_[j]][layer]), ctx.seq.S(), (int64_t)j * M_, M_,
                        stream_weight(layer), param_weight(layer));
}

}  // namespace lingua
