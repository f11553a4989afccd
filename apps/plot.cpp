// lingua plot: one self-contained HTML page of charts from one or several dump dirs (their
// metrics.jsonl and metrics.eval.jsonl), runs overlaid by global step: training loss, every
// numeric validation and task metric, learning rate, gradient norm, tokens/s, MFU and memory. The
// charting library (uPlot, npm, fetched by make setup) is compiled into the binary and inlined, so
// the page opens offline. `lingua train` writes dump_dir/plots.html at its end the same way.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "apps/commands.h"
#include "lingua/config/config.h"
#include "lingua/core/error.h"

namespace fs = std::filesystem;

#if LINGUA_UPLOT
extern const char* const kUplotJs;
extern const char* const kUplotCss;
#endif

namespace lingua::app {

namespace {

struct PlotConfig {
  std::vector<std::string> dump_dirs;
  std::string dump_dir;
  std::string out;
  std::string title = "lingua runs";
  std::string x = "step";
  std::vector<std::string> keys;
  template <class V> void visit(V& v) {
    v("dump_dirs", dump_dirs, "the runs to compare: dump_dirs='[runs/a, runs/b]'");
    v("dump_dir", dump_dir, "one run (added to dump_dirs)");
    v("out", out, "the HTML file to write (default: <first dump dir>/plots.html)");
    v("title", title, "the page title");
    v.choice("x", x, {"step", "tokens", "flops"},
             "the x axis: the global step, the tokens trained (optim/total_tokens) or the model FLOPs trained "
             "(optim/total_flops; runs of different models, a run that grows, compare at equal compute)");
    v("keys", keys, "only these charts, in this order, e.g. '[\"eval: books/nll_per_token\", loss/out]' (default: "
      "the training metrics, then every evaluation metric)");
  }
};

// x -> value of each metric key of one run's JSONL files.
using Series = std::map<std::string, std::map<double, double>>;

// The x of a step: the step, or a count the training lines log (optim/total_tokens, _flops),
// linear between the logged steps (exact while the count grows by the same amount each step;
// a run that grows logs the steps either side of the growth), beyond the last one extrapolated.
struct XAxis {
  std::string key;                // "" : the step itself
  std::map<int64_t, double> at;   // logged step -> x
  double operator()(int64_t step) const {
    if (key.empty()) return (double)step;
    auto hi = at.lower_bound(step);
    if (hi != at.end() && hi->first == step) return hi->second;
    if (hi == at.begin()) return hi->second * (double)step / (double)std::max<int64_t>(1, hi->first);
    auto lo = std::prev(hi);
    if (hi == at.end()) {
      if (lo == at.begin()) return lo->second * (double)step / (double)std::max<int64_t>(1, lo->first);
      hi = lo--;
    }
    return lo->second + (hi->second - lo->second) * (double)(step - lo->first) / (double)(hi->first - lo->first);
  }
};

[[maybe_unused]] void read_metrics(const std::vector<nlohmann::json>& lines, const std::string& prefix, const XAxis& x,
                                   Series* out) {
  for (const nlohmann::json& j : lines) {
    const double at = x(j["global_step"].get<int64_t>());
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it.value().is_number() && it.key() != "global_step") (*out)[prefix + it.key()][at] = it.value().get<double>();
  }
}

// The charts in page order: the training metrics first, then every evaluation key.
[[maybe_unused]] std::vector<std::string> chart_keys(const std::vector<Series>& runs) {
  const std::vector<std::string> first = {"loss/out", "optim/lr", "optim/grad_norm", "speed/wps", "speed/mfu",
                                          "memory/max_active_gib"};
  std::vector<std::string> keys;
  std::set<std::string> have;
  for (const Series& s : runs)
    for (auto& [k, v] : s) have.insert(k);
  for (const std::string& k : first)
    if (have.count(k)) keys.push_back(k);
  for (const std::string& k : have)
    if (k.rfind("eval: ", 0) == 0 && !k.ends_with("_stderr") && !k.ends_with("/skipped_lines") &&
        !k.ends_with("/tokens") && !k.ends_with("/examples"))
      keys.push_back(k);
  return keys;
}

}  // namespace

std::vector<nlohmann::json> read_metric_lines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("global_step") && j["global_step"].is_number_integer())  // (not a torn line)
      lines.push_back(std::move(j));
  }
  return lines;
}

std::string write_plot(const std::vector<std::string>& dump_dirs, const std::string& out_path, const std::string& title,
                       const std::string& x_axis, const std::vector<std::string>& only_keys) {
#if !LINGUA_UPLOT
  fail("lingua plot: this binary was built without the charting library (npm uplot under data/npm/, which make setup "
       "fetches); run make setup and rebuild");
#else
  LINGUA_CHECK(!dump_dirs.empty(), "lingua plot: give the runs: dump_dir=DIR or dump_dirs='[a, b]'");
  std::vector<Series> runs;
  std::vector<std::string> names;
  for (const std::string& d : dump_dirs) {
    const fs::path m = fs::path(d) / "metrics.jsonl";
    LINGUA_CHECK(fs::exists(m), "lingua plot: ", d, " has no metrics.jsonl (not a dump_dir of lingua train)");
    const std::vector<nlohmann::json> training = read_metric_lines(m.string());
    XAxis x;
    if (x_axis != "step") {
      x.key = "optim/total_" + x_axis;
      for (const nlohmann::json& j : training)
        if (j.contains(x.key) && j[x.key].is_number()) x.at[j["global_step"].get<int64_t>()] = j[x.key].get<double>();
      LINGUA_CHECK(!x.at.empty(), "lingua plot: ", m.string(), " has no ", x.key, " (written by lingua train since ",
                   x_axis == "flops" ? "2026-12-07" : "its start", "); use x=step");
    }
    Series s;
    read_metrics(training, "", x, &s);
    read_metrics(read_metric_lines((fs::path(d) / "metrics.eval.jsonl").string()), "eval: ", x, &s);
    runs.push_back(std::move(s));
    names.push_back(fs::path(d).filename().string().empty() ? d : fs::path(d).filename().string());
  }
  // One chart per key: x = the union of the runs' steps, one series per run (null where it has none).
  nlohmann::json charts = nlohmann::json::array();
  std::vector<std::string> keys = chart_keys(runs);
  if (!only_keys.empty()) {
    for (const std::string& k : only_keys)
      LINGUA_CHECK(std::find(keys.begin(), keys.end(), k) != keys.end(), "lingua plot: no chart '", k,
                   "' in these runs (keys: the metrics' names; evaluation ones start with \"eval: \")");
    keys = only_keys;
  }
  for (const std::string& key : keys) {
    std::set<double> steps;
    for (const Series& s : runs)
      if (auto it = s.find(key); it != s.end())
        for (auto& [st, v] : it->second) steps.insert(st);
    nlohmann::json data = nlohmann::json::array();
    data.push_back(nlohmann::json(std::vector<double>(steps.begin(), steps.end())));
    for (const Series& s : runs) {
      nlohmann::json ys = nlohmann::json::array();
      const auto it = s.find(key);
      for (double st : steps) {
        if (it == s.end() || !it->second.count(st)) {
          ys.push_back(nullptr);
        } else {
          ys.push_back(it->second.at(st));
        }
      }
      data.push_back(ys);
    }
    charts.push_back({{"key", key}, {"data", data}});
  }
  const nlohmann::json page = {
      {"title", title}, {"runs", names}, {"dirs", dump_dirs}, {"charts", charts}, {"x", x_axis}};
  std::string json = page.dump();
  for (size_t at; (at = json.find("</")) != std::string::npos;) json.replace(at, 2, "<\\/");  // (inside <script>)
  const std::string out = out_path.empty() ? (fs::path(dump_dirs[0]) / "plots.html").string() : out_path;
  const std::string tmp = out + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    LINGUA_CHECK(f.good(), "lingua plot: cannot write ", tmp);
    f << "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" << title << "</title>\n<style>" << kUplotCss
      << "\nbody{font-family:sans-serif;margin:16px} .chart{display:inline-block;margin:8px;vertical-align:top}"
         " h1{font-size:18px}</style>\n<script>"
      << kUplotJs << "</script></head><body>\n<h1 id=\"title\"></h1><div id=\"charts\"></div>\n<script id=\"data\" "
                     "type=\"application/json\">"
      << json << "</script>\n<script>\n"
      // (Rendering state for headless checks: body data-error on any script error, data-rendered
      // with the number of charts drawn once every chart is.)
      << R"js(window.addEventListener("error", e => document.body.setAttribute("data-error", String(e.message)));
const page = JSON.parse(document.getElementById("data").textContent);
document.getElementById("title").textContent = page.title + " (" + page.runs.join(", ") + ")";
const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
for (const c of page.charts) {
  const div = document.createElement("div");
  div.className = "chart";
  document.getElementById("charts").appendChild(div);
  const series = [{label: page.x}].concat(page.runs.map((r, i) => ({label: r, stroke: colors[i % colors.length],
                                                                   spanGaps: true})));
  // (Counts of tokens and FLOPs as 1.5e12: their digits would overlap.)
  const xs = page.x === "step" ? {} : {values: (u, vals) => vals.map(v => v === 0 ? "0" : v.toExponential(1))};
  new uPlot({title: c.key, width: 460, height: 260, series: series, scales: {x: {time: false}}, axes: [xs, {}]},
            c.data, div);
}
document.body.setAttribute("data-rendered", String(page.charts.length));
)js" << "</script></body></html>\n";
  }
  fs::rename(tmp, out);
  return out;
#endif
}

int plot_main(const Args& args) {
  if (print_help_if_asked<PlotConfig>(args, "lingua plot dump_dirs='[a, b]' [out=plots.html] [x=step|tokens|flops]")) return 0;
  PlotConfig c = parse_config<PlotConfig>(args);
  if (!c.dump_dir.empty()) c.dump_dirs.insert(c.dump_dirs.begin(), c.dump_dir);
  const std::string out = write_plot(c.dump_dirs, c.out, c.title, c.x, c.keys);
  std::fprintf(stderr, "lingua plot: %zu run%s -> %s\n", c.dump_dirs.size(), c.dump_dirs.size() == 1 ? "" : "s",
               out.c_str());
  return 0;
}

}  // namespace lingua::app
