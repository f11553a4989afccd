#include "lingua/config/config.h"

#include <filesystem>
#include <fstream>

namespace lingua::config_detail {

void Origins::set_by_arg(const std::string& path, const std::string& arg) {
  // The argument replaces the value at `path` and everything under it.
  for (auto it = args.lower_bound(path); it != args.end() && it->first.rfind(path, 0) == 0;) {
    const char next = it->first.size() > path.size() ? it->first[path.size()] : '\0';
    it = (next == '\0' || next == '.' || next == '[') ? args.erase(it) : std::next(it);
  }
  args[path] = arg;
}

std::string Origins::where(const YAML::Node& n, const std::string& path) const {
  // The value, or one of its parents, set by an argument: the last one to set it.
  for (std::string p = path; !p.empty();) {
    auto it = args.find(p);
    if (it != args.end()) return " (command-line argument '" + it->second + "')";
    const size_t cut = p.find_last_of(".[");
    p = cut == std::string::npos ? std::string() : p.substr(0, cut);
  }
  if (file.empty()) return " (command line)";
  if (n.IsDefined() && !n.Mark().is_null()) return " (" + file + ":" + std::to_string(n.Mark().line + 1) + ")";
  return " (" + file + ")";
}

std::string node_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  return flow_text(n);
}

std::string flow_text(const YAML::Node& n) {
  YAML::Emitter em;
  em << YAML::Flow << n;
  return em.c_str();
}

YAML::Node load_yaml_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("config file not found: ", path);
  if (std::filesystem::is_directory(path, ec)) fail("config file ", path, " is a directory, expected a YAML file");
  if (!std::ifstream(path).good()) fail("config file ", path, " cannot be read (permissions?)");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    fail("config file ", path, ":", e.mark.line + 1, ": YAML syntax error: ", e.msg);
  }
  if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) fail("config file ", path, ": expected a mapping at the top level");
  return root;
}

namespace {

// The value of a dot-list argument, read as its key's ValueText says.
YAML::Node value_node(const std::string& arg, const std::string& text, ValueText how) {
  if (how == ValueText::exact) return YAML::Node(text);
  if (how == ValueText::exact_or_null)
    return text == "null" || text == "~" ? YAML::Node(YAML::NodeType::Null) : YAML::Node(text);
  if (how == ValueText::exact_list_or_null) {
    if (text == "null" || text == "~") return YAML::Node(YAML::NodeType::Null);
    how = ValueText::exact_list;
  }
  if (how == ValueText::exact_list && text.empty()) return YAML::Node(YAML::NodeType::Sequence);
  if (how == ValueText::exact_list && text[0] != '[') {
    YAML::Node one(YAML::NodeType::Sequence);
    one.push_back(YAML::Node(text));
    return one;
  }
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("command-line argument '", arg, "': value is not valid YAML: ", e.msg,
         how == ValueText::exact_list ? " (a value starting with '[' is read as a YAML list, e.g. '[\"a\", \"b\"]')"
                                      : "");
  }
  if (text.empty()) value = YAML::Node(std::string());
  return value;
}

}  // namespace

std::string apply_dotlist(YAML::Node& root, const std::string& arg, const std::vector<Lister::Entry>& valid) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("command-line argument '", arg, "': expected key=value (e.g. model.dim=512) or config=path.yaml");
  std::string key = arg.substr(0, eq), text = arg.substr(eq + 1);
  // The key must be a config path, or a child of a mapping-valued key (data.sources.wiki=1).
  const Lister::Entry* entry = nullptr;
  ValueText how = ValueText::yaml;
  for (auto& e : valid) {
    if (e.path == key) entry = &e, how = e.text;
    if (e.open_map && key.rfind(e.path + ".", 0) == 0 && key.find('.', e.path.size() + 1) == std::string::npos)
      entry = &e, how = e.child_text;
  }
  if (!entry) {
    std::string parent = key.find('.') == std::string::npos ? "" : key.substr(0, key.rfind('.'));
    std::string valid_here;
    for (auto& e : valid) {
      std::string p = e.path.find('.') == std::string::npos ? "" : e.path.substr(0, e.path.rfind('.'));
      if (p == parent) valid_here += (valid_here.empty() ? "" : ", ") + e.path;
    }
    if (valid_here.empty())
      for (auto& e : valid)
        if (e.path.find('.') == std::string::npos) valid_here += (valid_here.empty() ? "" : ", ") + e.path;
    fail("unknown config key '", key, "' in command-line argument '", arg, "'; valid keys: ", valid_here);
  }
  YAML::Node value = value_node(arg, text, how);
  // Walk/create the path. yaml-cpp nodes are handles, so we rebuild the chain by assignment.
  std::vector<std::string> parts;
  size_t s = 0;
  for (size_t i = 0; i <= key.size(); ++i)
    if (i == key.size() || key[i] == '.') { parts.push_back(key.substr(s, i - s)); s = i + 1; }
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsDefined() || !next.IsMap()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = value;
  return key;
}

}  // namespace lingua::config_detail

#include <nlohmann/json.hpp>

namespace lingua {

static nlohmann::json to_json(const YAML::Node& n) {
  if (n.IsMap()) {
    nlohmann::json j = nlohmann::json::object();
    for (auto it = n.begin(); it != n.end(); ++it) j[it->first.Scalar()] = to_json(it->second);
    return j;
  }
  if (n.IsSequence()) {
    nlohmann::json j = nlohmann::json::array();
    for (auto x : n) j.push_back(to_json(x));
    return j;
  }
  if (!n.IsDefined() || n.IsNull()) return nullptr;
  const std::string& s = n.Scalar();
  // Scalars the Writer produced: integers, floats, booleans, or strings.
  long long i;
  double d;
  bool b;
  if (n.Tag() != "!" && YAML::convert<long long>::decode(n, i) && s.find_first_of(".eE") == std::string::npos)
    return i;
  if (n.Tag() != "!" && YAML::convert<double>::decode(n, d) && s.find_first_of("0123456789") != std::string::npos)
    return d;
  if (n.Tag() != "!" && (s == "true" || s == "false") && YAML::convert<bool>::decode(n, b)) return b;
  return s;
}

std::string yaml_to_json_text(const YAML::Node& node) { return to_json(node).dump(2) + "\n"; }

}  // namespace lingua
