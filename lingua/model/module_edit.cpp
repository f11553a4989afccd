#include "lingua/model/module_edit.h"

#include <algorithm>
#include <cmath>

#include "lingua/model/ffn/ffn.h"

namespace lingua {

namespace {

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

void erase(std::vector<std::string>& v, const std::string& x) { v.erase(std::remove(v.begin(), v.end(), x), v.end()); }

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "none" : s;
}

}  // namespace

const char* module_action_name(ModuleEdit::Action a) {
  switch (a) {
    case ModuleEdit::add: return "add";
    case ModuleEdit::remove: return "remove";
    case ModuleEdit::rename: return "rename";
    case ModuleEdit::enable: return "enable";
    case ModuleEdit::disable: return "disable";
  }
  return "?";
}

ModuleEdit::Action parse_module_action(const std::string& n) {
  for (auto a : {ModuleEdit::add, ModuleEdit::remove, ModuleEdit::rename, ModuleEdit::enable, ModuleEdit::disable})
    if (n == module_action_name(a)) return a;
  fail("unknown modules action '", n, "' (valid: list, add, remove, rename, enable, disable)");
}

ModelConfig edit_module_config(const ModelConfig& cfg, const ModuleEdit& e) {
  ModelConfig c = cfg;
  c.create_module_name.clear();
  LINGUA_CHECK(!e.name.empty(), "config key 'name' is required (the module to ", module_action_name(e.action), ")");
  const bool held = has(c.modules, e.name);
  LINGUA_CHECK(e.action == ModuleEdit::add || held, "the model holds no module '", e.name, "' (it holds ",
               joined(c.modules), ")");
  std::vector<std::string> enabled = c.enabled_modules ? *c.enabled_modules : c.modules;
  switch (e.action) {
    case ModuleEdit::add:
      LINGUA_CHECK(!held, "the model already holds a module '", e.name, "'");
      if (c.modules.empty()) {
        if (e.seq_len > 0) c.module_seq_len = e.seq_len;
        if (!e.agg.empty()) c.module_agg = e.agg;
        LINGUA_CHECK(c.module_seq_len > 0, "config key 'seq_len' is required: the model holds no module yet, so the "
                     "rows per module (model.module_seq_len) are not set");
      } else {
        LINGUA_CHECK(e.seq_len == 0 || e.seq_len == c.module_seq_len, "config key 'seq_len' (", e.seq_len,
                     ") differs from the model's module_seq_len (", c.module_seq_len,
                     "): the modules of a model have the same length");
        LINGUA_CHECK(e.agg.empty() || e.agg == c.module_agg, "config key 'agg' (", e.agg,
                     ") differs from the model's module_agg (", c.module_agg, "), which its modules were trained with");
      }
      c.modules.push_back(e.name);
      enabled.push_back(e.name);
      break;
    case ModuleEdit::remove:
      erase(c.modules, e.name);
      erase(enabled, e.name);
      break;
    case ModuleEdit::rename:
      LINGUA_CHECK(!e.to.empty(), "config key 'to' is required (the module's new name)");
      LINGUA_CHECK(!has(c.modules, e.to), "the model already holds a module '", e.to, "'");
      std::replace(c.modules.begin(), c.modules.end(), e.name, e.to);
      std::replace(enabled.begin(), enabled.end(), e.name, e.to);
      break;
    case ModuleEdit::enable:
      LINGUA_CHECK(!has(enabled, e.name), "module '", e.name, "' is already enabled");
      enabled.push_back(e.name);
      break;
    case ModuleEdit::disable:
      LINGUA_CHECK(has(enabled, e.name), "module '", e.name, "' is already disabled");
      erase(enabled, e.name);
      break;
  }
  c.enabled_modules = enabled;
  if (c.modules.empty()) c.enabled_modules.reset();
  check_module_config(c);
  check_ffn_config(c);  // (an FFN variant may refuse module rows)
  return c;
}

std::unique_ptr<Transformer> apply_module_edit(const Transformer& src, const ModelConfig& edited, const ModuleEdit& e) {
  auto out = std::make_unique<Transformer>(edited, src.dims());
  const ParamStore& from = src.params();
  ParamStore& to = out->params();
  for (int id : to.ids()) {
    const std::string& n = to.info(id).name;
    std::string module, source = n;
    const bool is_module = is_module_param(n, &module);
    if (e.action == ModuleEdit::rename && is_module && module == e.to)
      source = n.substr(0, n.size() - e.to.size()) + e.name;
    const int sid = from.find(source);
    if (sid < 0) {
      LINGUA_CHECK(e.action == ModuleEdit::add && is_module && module == e.name, "internal error: parameter '", n,
                   "' has no source");
      continue;  // the added module: its initial values
    }
    LINGUA_CHECK(from.info(sid).shape == to.info(id).shape, "internal error: parameter '", n, "' changed shape");
    to.set_param(id, from.host_param(sid).data());
  }
  return out;
}

std::vector<ModuleSummary> module_summaries(const Transformer& model, const ModelConfig& cfg) {
  std::vector<ModuleSummary> out;
  const ParamStore& s = model.params();
  const std::vector<std::string> enabled = cfg.enabled_modules ? *cfg.enabled_modules : cfg.modules;
  for (const std::string& name : cfg.modules) {
    ModuleSummary m;
    m.name = name;
    m.enabled = has(enabled, name);
    m.rows = cfg.module_seq_len;
    double sq = 0;
    for (int l = 0; l < model.n_layers(); ++l) {
      const int id = s.find(module_param_name(l, name));
      if (id < 0) continue;
      m.layers.push_back(l);
      for (float v : s.host_param(id)) sq += (double)v * v;
      m.params += s.info(id).full_numel();
    }
    m.rms = m.params ? std::sqrt(sq / (double)m.params) : 0;
    out.push_back(m);
  }
  return out;
}

}  // namespace lingua
