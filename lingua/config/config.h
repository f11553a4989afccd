#pragma once
// Config loading: built-in defaults < YAML file (config=path.yaml) < dot-list overrides
// (model.dim=1024, data.sources={wiki: 0.8}), as Lingua. Every config struct lists its fields
// once in visit(); the visitors below turn that list into the YAML reader (strict: unknown keys,
// wrong types and non-finite numbers are errors naming the key, its path, and the file and line
// or the command-line argument that set it), the dot-list checker (text keys take the argument's
// text exactly: ValueText), the YAML writer and the --help listing.
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "lingua/config/any_value.h"
#include "lingua/core/error.h"
#include "lingua/core/utf8.h"

namespace lingua {

namespace config_detail {

template <class T, class V>
concept Visitable = requires(T t, V v) { t.visit(v); };

template <class T> struct is_optional : std::false_type {};
template <class T> struct is_optional<std::optional<T>> : std::true_type {};
template <class T> struct is_vector : std::false_type {};
template <class T> struct is_vector<std::vector<T>> : std::true_type {};
template <class T> struct is_map : std::false_type {};
template <class T> struct is_map<std::map<std::string, T>> : std::true_type {};

// Where each value came from: the YAML file (`file`, empty when none) and the dot-list
// arguments by the config path they set ("model.dim" -> "model.dim=abc"; a later argument that
// sets a parent replaces its children's entries).
struct Origins {
  std::string file;
  std::map<std::string, std::string> args;
  void set_by_arg(const std::string& path, const std::string& arg);
  // " (command-line argument 'model.dim=abc')" when `path` or a parent of it was set by an
  // argument, else " (file.yaml:12)" for a node of the file, " (file.yaml)" without a line.
  std::string where(const YAML::Node& n, const std::string& path) const;
};
std::string node_text(const YAML::Node& n);
std::string flow_text(const YAML::Node& n);  // the node as one line of flow-style YAML

template <class T> const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean (true/false)";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (is_vector<T>::value) return "a list";
  else if constexpr (is_map<T>::value) return "a mapping";
  else return "a value";
}

// Scalar conversion with range and type checks. Throws lingua::Error.
// `at`: where the value came from (Origins::where).
template <class T>
T parse_scalar(const YAML::Node& n, const std::string& path, const std::string& at) {
  auto bad = [&]() -> T { fail("config key '", path, "': expected ", type_name<T>(), ", got '", node_text(n), "'", at); };
  if (std::is_same_v<T, std::string> && n.IsNull()) return T{};  // "path: null" (as Lingua writes None)
  if (!n.IsScalar()) return bad();
  if constexpr (std::is_same_v<T, std::string>) {
    // config.yaml and params.json must be able to hold it.
    if (!is_valid_utf8(n.Scalar())) fail("config key '", path, "': the text is not valid UTF-8", at);
    return n.Scalar();
  } else if constexpr (std::is_same_v<T, bool>) {
    bool b;
    if (!YAML::convert<bool>::decode(n, b)) return bad();
    return b;
  } else if constexpr (std::is_integral_v<T>) {
    long long x;
    double d;
    if (YAML::convert<long long>::decode(n, x)) {
    } else if (YAML::convert<double>::decode(n, d) && std::abs(d) < 9e18 && d == (double)(long long)d) {
      // (range first: converting 1e114 to long long is undefined behaviour)
      x = (long long)d;  // 1e6 is a fine integer
    } else {
      return bad();
    }
    if (x < (long long)std::numeric_limits<T>::min() || x > (long long)std::numeric_limits<T>::max()) return bad();
    return (T)x;
  } else {
    double d;
    if (!YAML::convert<double>::decode(n, d)) return bad();
    if (!std::isfinite(d)) fail("config key '", path, "': expected a finite number, got '", node_text(n), "'", at);
    return (T)d;
  }
}

// Reads a YAML mapping into a config struct. Unknown keys are errors listing the valid keys.
class Reader {
 public:
  Reader(const YAML::Node& node, std::string path, const Origins& origins)
      : node_(node), path_(std::move(path)), origins_(&origins) {}

  template <class T>
  void operator()(const char* key, T& member, const char* /*doc*/) {
    keys_.push_back(key);
    YAML::Node n = node_[key];
    if (!n.IsDefined()) return;
    read(n, child(key), member);
  }
  void choice(const char* key, std::string& member, std::initializer_list<const char*> choices, const char* doc) {
    (*this)(key, member, doc);
    for (const char* c : choices)
      if (member == c) return;
    std::string valid;
    for (const char* c : choices) valid += std::string(valid.empty() ? "" : ", ") + c;
    fail("config key '", child(key), "': '", member, "' is not one of: ", valid, at(node_[key], child(key)));
  }
  // After visit(): every key of the node must have been a field.
  void check_unknown() const {
    if (!node_.IsMap()) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string k = it->first.Scalar();
      bool known = false;
      for (auto& v : keys_) known |= (v == k);
      if (!known) {
        std::string valid;
        for (auto& v : keys_) valid += (valid.empty() ? "" : ", ") + v;
        fail("unknown config key '", k, "' at '", child(k.c_str()), "'", at(it->first, child(k.c_str())),
             "; valid keys", path_.empty() ? "" : " under '" + path_ + "'", ": ", valid);
      }
    }
  }

  template <class T>
  void read(const YAML::Node& n, const std::string& path, T& member) {
    if constexpr (is_optional<T>::value) {
      if (n.IsNull() || (n.IsScalar() && (n.Scalar() == "null" || n.Scalar() == "~"))) {
        member.reset();
      } else {
        typename T::value_type v{};
        read(n, path, v);
        member = v;
      }
    } else if constexpr (Visitable<T, Reader>) {
      if (n.IsNull()) return;  // "data:" with nothing under it
      if (!n.IsMap()) fail("config key '", path, "': expected a mapping, got '", node_text(n), "'", at(n, path));
      Reader sub(n, path, *origins_);
      member.visit(sub);
      sub.check_unknown();
    } else if constexpr (std::is_same_v<T, AnyValue>) {
      member.yaml = n.IsNull() ? std::string() : flow_text(n);
    } else if constexpr (is_vector<T>::value) {
      if (!n.IsSequence()) fail("config key '", path, "': expected a list, got '", node_text(n), "'", at(n, path));
      member.clear();
      for (size_t i = 0; i < n.size(); ++i) {
        typename T::value_type v{};
        read(n[i], path + "[" + std::to_string(i) + "]", v);
        member.push_back(v);
      }
    } else if constexpr (is_map<T>::value) {
      if (n.IsNull()) { member.clear(); return; }
      if (!n.IsMap()) fail("config key '", path, "': expected a mapping, got '", node_text(n), "'", at(n, path));
      member.clear();
      for (auto it = n.begin(); it != n.end(); ++it) {
        typename T::mapped_type v{};
        std::string k = it->first.Scalar();
        if (!is_valid_utf8(k)) fail("config key '", path, "': a key is not valid UTF-8", at(it->first, path));
        read(it->second, path + "." + k, v);
        member[k] = v;
      }
    } else {
      member = parse_scalar<T>(n, path, at(n, path));
    }
  }

 private:
  std::string child(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  std::string at(const YAML::Node& n, const std::string& path) const { return origins_->where(n, path); }
  YAML::Node node_;
  std::string path_;
  const Origins* origins_;
  std::vector<std::string> keys_;
};

// Writes a config struct as a YAML node.
class Writer {
 public:
  YAML::Node node{YAML::NodeType::Map};
  template <class T>
  void operator()(const char* key, const T& member, const char*) { node[key] = write(member); }
  void choice(const char* key, const std::string& m, std::initializer_list<const char*>, const char* d) {
    (*this)(key, m, d);
  }
  template <class T>
  static YAML::Node write(const T& m) {
    if constexpr (is_optional<T>::value) {
      return m ? write(*m) : YAML::Node(YAML::NodeType::Null);
    } else if constexpr (std::is_same_v<T, AnyValue>) {
      return m.yaml.empty() ? YAML::Node(YAML::NodeType::Null) : YAML::Load(m.yaml);
    } else if constexpr (Visitable<T, Writer>) {
      Writer w;
      const_cast<T&>(m).visit(w);
      return w.node;
    } else if constexpr (is_vector<T>::value) {
      YAML::Node s(YAML::NodeType::Sequence);
      for (auto& x : m) s.push_back(write(x));
      return s;
    } else if constexpr (is_map<T>::value) {
      YAML::Node s(YAML::NodeType::Map);
      for (auto& [k, v] : m) s[k] = write(v);
      return s;
    } else if constexpr (std::is_floating_point_v<T>) {
      // Shortest text that reads back to the same double (0.0003, not 0.00029999999999999997).
      char buf[64];
      auto r = std::to_chars(buf, buf + sizeof buf, (double)m);
      std::string s(buf, r.ptr);
      if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it a float in YAML
      return YAML::Node(s);
    } else if constexpr (std::is_same_v<T, std::string>) {
      // Tagged a string whatever it looks like, so params.json keeps "1e5", "0x10" or "true" a
      // string (yaml_to_json_text); the YAML emitter does not print the "!" tag.
      YAML::Node n(m);
      n.SetTag("!");
      return n;
    } else {
      return YAML::Node(m);
    }
  }
};

// How a dot-list value is read: parsed as YAML, or taken as exact text (string keys: the text
// after '=' verbatim, spaces included), or as a list of exact texts (a value starting with '['
// is a YAML flow list, anything else is one item).
enum class ValueText { yaml, exact, exact_or_null, exact_list, exact_list_or_null };

template <class T> constexpr ValueText value_text() {
  if constexpr (std::is_same_v<T, std::string>) return ValueText::exact;
  else if constexpr (std::is_same_v<T, std::optional<std::string>>) return ValueText::exact_or_null;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return ValueText::exact_list;
  else if constexpr (std::is_same_v<T, std::optional<std::vector<std::string>>>) return ValueText::exact_list_or_null;
  else return ValueText::yaml;
}

// Lists "path = default  description" lines, and the set of valid dotted paths.
class Lister {
 public:
  struct Entry {
    std::string path, value, doc;
    bool open_map;        // a mapping whose children are free (data.sources.<name>)
    ValueText text;       // how a value given on the command line is read
    ValueText child_text; // ... for a child of an open mapping
  };
  std::vector<Entry> entries;
  std::string prefix;
  template <class T>
  void operator()(const char* key, T& member, const char* doc) { add(key, member, doc); }
  void choice(const char* key, std::string& m, std::initializer_list<const char*> choices, const char* doc) {
    std::string d = std::string(doc) + " [";
    bool first = true;
    for (const char* c : choices) {
      if (!first) d += '|';
      d += c;
      first = false;
    }
    add(key, m, d + "]");
  }

 private:
  template <class T>
  void add(const char* key, T& member, const std::string& doc) {
    std::string path = prefix.empty() ? key : prefix + "." + key;
    if constexpr (Visitable<T, Lister>) {
      Lister sub;
      sub.prefix = path;
      member.visit(sub);
      entries.push_back({path, "", doc, false, ValueText::yaml, ValueText::yaml});
      for (auto& e : sub.entries) entries.push_back(e);
    } else {
      YAML::Emitter em;
      em << YAML::Flow << Writer::write(member);
      ValueText child = ValueText::yaml;
      if constexpr (is_map<T>::value) child = value_text<typename T::mapped_type>();
      // (A key of any shape takes children too: growth.source.n_layers=6.)
      entries.push_back({path, em.c_str(), doc, is_map<T>::value || std::is_same_v<T, AnyValue>, value_text<T>(), child});
    }
  }
};

YAML::Node load_yaml_file(const std::string& path);
// Applies "a.b.c=value" onto root (the value read as its key's ValueText says). Checks the path
// against valid (mapping-valued keys accept any child). Throws naming the argument; returns the
// path it set.
std::string apply_dotlist(YAML::Node& root, const std::string& arg, const std::vector<Lister::Entry>& valid);

// Reads root into cfg (from defaults), unknown keys rejected; then the config's own defaults
// that depend on other keys (C::resolve_defaults, when it has one).
template <class C>
C read_config(const YAML::Node& root, const Origins& origins, const C& defaults) {
  // A scalar or list root would reach yaml-cpp's operator[] (a YAML exception, not an Error).
  if (!root.IsMap())
    fail(origins.file.empty() ? "the config" : origins.file, ": expected a mapping (a JSON object) at the top level, got '",
         node_text(root), "'");
  C cfg = defaults;
  Reader r(root, "", origins);
  cfg.visit(r);
  r.check_unknown();
  if constexpr (requires(C& c) { c.resolve_defaults(); }) cfg.resolve_defaults();
  return cfg;
}

}  // namespace config_detail

// Parses command-line style arguments ("config=path.yaml", "key.sub=value") into a config
// struct starting from its defaults.
template <class C>
C parse_config(const std::vector<std::string>& args, C defaults = C{}) {
  using namespace config_detail;
  YAML::Node root(YAML::NodeType::Map);
  Origins origins;
  for (auto& a : args) {
    if (a.rfind("config=", 0) == 0) {
      origins.file = a.substr(7);
      root = load_yaml_file(origins.file);
    }
  }
  // Unknown keys and types in the file are reported with its line numbers first.
  C cfg = read_config(root, origins, defaults);
  Lister lister;
  defaults.visit(lister);
  bool any = false;
  for (auto& a : args) {
    if (a.rfind("config=", 0) == 0) continue;
    origins.set_by_arg(apply_dotlist(root, a, lister.entries), a);
    any = true;
  }
  if (any) cfg = read_config(root, origins, defaults);
  return cfg;
}

template <class C>
std::string config_to_yaml(const C& cfg) {
  YAML::Emitter em;
  em << config_detail::Writer::write(cfg);
  return std::string(em.c_str()) + "\n";
}

template <class C>
std::string config_help(C defaults = C{}) {
  config_detail::Lister lister;
  defaults.visit(lister);
  size_t w = 0;
  for (auto& e : lister.entries) w = std::max(w, e.path.size() + (e.value.empty() ? 0 : e.value.size() + 3));
  std::ostringstream os;
  for (auto& e : lister.entries) {
    std::string left = e.value.empty() ? e.path + ":" : e.path + " = " + e.value;
    os << "  " << left << std::string(w + 2 - left.size(), ' ') << e.doc << "\n";
  }
  return os.str();
}

}  // namespace lingua

namespace lingua {

// Config as JSON (params.json in checkpoints) and back. JSON is read through the same strict
// YAML reader, so a params.json with an unknown key is rejected like a YAML file.
std::string yaml_to_json_text(const YAML::Node& node);

template <class C>
std::string config_to_json(const C& cfg) {
  return yaml_to_json_text(config_detail::Writer::write(cfg));
}

template <class C>
C config_from_json_text(const std::string& text, const std::string& origin, C defaults = C{}) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(origin, ": not valid JSON: ", e.msg);
  }
  config_detail::Origins origins;
  origins.file = origin;
  return config_detail::read_config(root, origins, defaults);
}

}  // namespace lingua
