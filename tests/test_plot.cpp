// lingua plot and the end of lingua train: one self-contained HTML page with the charting library
// inlined, a chart per metric (training, validation, tasks), the runs' values exactly as their
// metrics files hold them; the page's scripts parse (node --check) and render in headless Chromium;
// errors name the directory.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The text between the n-th `open` and the next `close` after it.
std::string between(const std::string& s, const std::string& open, const std::string& close, int n = 0) {
  size_t at = 0;
  for (int i = 0; i <= n; ++i) {
    at = s.find(open, at);
    if (at == std::string::npos) return "";
    at += open.size();
  }
  return s.substr(at, s.find(close, at) - at);
}

}  // namespace

TEST(PlotCli, ChartsOfSeveralRunsWithTheirValues) {
  if (run_cli("plot dump_dir=/nonexistent").second.find("without the charting library") != std::string::npos)
    GTEST_SKIP() << "built without npm uplot (make setup)";
  const fs::path data = make_corpus("plot");
  TrainConfig a = tiny_config(data, temp_dir("plot_a")), b = tiny_config(data, temp_dir("plot_b"));
  b.optim.lr = 1e-3;
  train(a, {nullptr, true});
  train(b, {nullptr, true});
  const fs::path out = temp_dir("plot_out") / "runs.html";
  auto [rc, msg] = run_cli("plot dump_dirs='[" + a.dump_dir + ", " + b.dump_dir + "]' out=" + out.string() + " title=demo");
  ASSERT_EQ(rc, 0) << msg;
  const std::string html = read_file(out);
  EXPECT_NE(html.find("uPlot"), std::string::npos) << "the library is inlined";
  EXPECT_EQ(html.find("<script src="), std::string::npos) << "nothing loaded from elsewhere";
  const nlohmann::json page = nlohmann::json::parse(between(html, "type=\"application/json\">", "</script>"));
  EXPECT_EQ(page["title"], "demo");
  ASSERT_EQ(page["runs"].size(), 2u);
  std::map<std::string, nlohmann::json> charts;
  for (auto& c : page["charts"]) charts[c["key"]] = c["data"];
  for (const char* k : {"loss/out", "optim/lr", "optim/grad_norm", "speed/wps", "eval: toy/nll_per_token"})
    EXPECT_TRUE(charts.count(k)) << k;
  // The loss series of run b are its metrics.jsonl, step by step.
  const auto metrics = read_jsonl(fs::path(b.dump_dir) / "metrics.jsonl");
  const nlohmann::json& loss = charts["loss/out"];
  ASSERT_EQ(loss[0].size(), metrics.size());
  for (size_t i = 0; i < metrics.size(); ++i) {
    EXPECT_EQ(loss[0][i], metrics[i]["global_step"]);
    EXPECT_EQ(loss[2][i].get<double>(), metrics[i]["loss/out"].get<double>());
  }
  // The page's own script parses (node --check), when node is here.
  if (std::system("node --version > /dev/null 2>&1") == 0) {
    const fs::path js = temp_dir("plot_out") / "page.js";
    std::ofstream(js) << between(html, "<script>\n", "</script>");
    EXPECT_EQ(std::system(("node --check " + js.string()).c_str()), 0);
  }
  // Errors name the directory.
  std::tie(rc, msg) = run_cli("plot dump_dir=" + temp_dir("plot_empty").string());
  EXPECT_NE(rc, 0);
  EXPECT_NE(msg.find("has no metrics.jsonl"), std::string::npos) << msg;
}

TEST(PlotCli, TrainEndsWithASummaryAndTheCharts) {
  if (run_cli("plot dump_dir=/nonexistent").second.find("without the charting library") != std::string::npos)
    GTEST_SKIP() << "built without npm uplot (make setup)";
  const fs::path data = make_corpus("plot_train"), dump = temp_dir("plot_train_run");
  auto [rc, out] = run_cli("train config=" + std::string(LINGUA_SOURCE_DIR) + "/configs/demo.yaml dump_dir=" +
                           dump.string() + " data.root_dir=" + data.string() +
                           " 'data.sources={toy: 1.0}' model.dim=32 model.n_layers=2 model.n_heads=4 model.multiple_of=16 "
                           "data.seq_len=24 model.max_seqlen=24 steps=4 checkpoint.eval.every=4 eval.tasks=[] "
                           "logging.unigram_baseline_tokens=0 device=cpu");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("lingua train: done at step 4 \\| loss [0-9.]+ \\| toy/nll_per_token [0-9.]+ "
                                                "\\| [0-9]+ tokens \\| [0-9.]+ min")))
      << out;
  EXPECT_NE(out.find("lingua train: charts in " + (dump / "plots.html").string()), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(dump / "plots.html"));
}

namespace {

// The DOM of `page` after its scripts ran in headless Chromium ("" when it could not run).
std::string rendered_dom(const fs::path& page) {
  const fs::path out = page.string() + ".dom";
  const std::string cmd = "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
                          "--user-data-dir=" + (page.parent_path() / "chromium-profile").string() +
                          " --virtual-time-budget=5000 --dump-dom file://" + fs::absolute(page).string() + " > " +
                          out.string() + " 2> " + out.string() + ".log";
  if (std::system(cmd.c_str()) != 0) return "";
  return read_file(out);
}

// The opening <body ...> tag of a DOM (where the page records its rendering state).
std::string body_tag(const std::string& dom) { return "<body" + between(dom, "<body", ">") + ">"; }

}  // namespace

// The page renders in a browser: headless Chromium (Debian's chromium, make setup) runs its
// scripts without an error and draws every chart (a canvas each); a page whose script fails is seen
// to fail.
TEST(PlotChromium, PageRendersEveryChart) {
  if (std::system("chromium --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no chromium (make setup installs it)";
  {
    const fs::path blank = temp_dir("plot_chromium_blank") / "blank.html";
    std::ofstream(blank) << "<!doctype html><html><body>ok</body></html>";
    if (rendered_dom(blank).find("ok") == std::string::npos)
      GTEST_SKIP() << "chromium does not start here: " << read_file(blank.string() + ".dom.log").substr(0, 300);
  }
  if (run_cli("plot dump_dir=/nonexistent").second.find("without the charting library") != std::string::npos)
    GTEST_SKIP() << "built without npm uplot (make setup)";
  TrainConfig a = tiny_config(make_corpus("plot_chromium"), temp_dir("plot_chromium_run"));
  train(a, {nullptr, true});
  const fs::path dir = temp_dir("plot_chromium_out"), out = dir / "plots.html";
  auto [rc, msg] = run_cli("plot dump_dir=" + a.dump_dir + " out=" + out.string());
  ASSERT_EQ(rc, 0) << msg;
  const std::string html = read_file(out);
  const size_t charts = nlohmann::json::parse(between(html, "type=\"application/json\">", "</script>"))["charts"].size();
  ASSERT_GE(charts, 5u);
  const std::string dom = rendered_dom(out);
  ASSERT_FALSE(dom.empty()) << read_file(out.string() + ".dom.log");
  const std::string body = body_tag(dom);
  EXPECT_EQ(body.find("data-error"), std::string::npos) << body;
  EXPECT_NE(body.find("data-rendered=\"" + std::to_string(charts) + "\""), std::string::npos) << body;
  size_t canvases = 0, plots = 0;
  for (size_t at = 0; (at = dom.find("<canvas", at)) != std::string::npos; ++at) ++canvases;
  for (size_t at = 0; (at = dom.find("class=\"uplot", at)) != std::string::npos; ++at) ++plots;
  EXPECT_EQ(plots, charts);
  EXPECT_GE(canvases, charts);

  // A page whose chart script throws is reported as such (the check can fail).
  std::string broken = html;
  const size_t at = broken.find("new uPlot(");
  ASSERT_NE(at, std::string::npos);
  broken.replace(at, 10, "new uPlotMissing(");
  const fs::path bad = dir / "broken.html";
  std::ofstream(bad, std::ios::binary) << broken;
  const std::string bad_dom = rendered_dom(bad);
  EXPECT_NE(body_tag(bad_dom).find("uPlotMissing is not defined"), std::string::npos) << body_tag(bad_dom);
  EXPECT_EQ(body_tag(bad_dom).find("data-rendered"), std::string::npos) << body_tag(bad_dom);
}

// x=flops: the x of every point is the model FLOPs trained by its step (optim/total_flops, which
// lingua train logs and keeps across a resume), so runs of different models compare at equal compute.
TEST(PlotCli, FlopsOnTheXAxis) {
  if (run_cli("plot dump_dir=/nonexistent").second.find("without the charting library") != std::string::npos)
    GTEST_SKIP() << "built without npm uplot (make setup)";
  const fs::path data = make_corpus("plot_flops");
  TrainConfig a = tiny_config(data, temp_dir("plot_flops_a"));
  a.steps = 10;  // stopped at 10 (a checkpoint), then resumed to 20: the count goes on
  train(a, {nullptr, true});
  a.steps = 20;
  train(a, {nullptr, true});
  const auto metrics = read_jsonl(fs::path(a.dump_dir) / "metrics.jsonl");
  ASSERT_GE(metrics.size(), 4u);
  const double per_step = metrics[0]["optim/total_flops"].get<double>() / metrics[0]["global_step"].get<double>();
  EXPECT_GT(per_step, 0);
  for (const auto& m : metrics)
    EXPECT_NEAR(m["optim/total_flops"].get<double>(), per_step * m["global_step"].get<double>(), 1e-9 * per_step * 20);
  const fs::path out = temp_dir("plot_flops_out") / "f.html";
  auto [rc, msg] = run_cli("plot dump_dir=" + a.dump_dir + " x=flops out=" + out.string());
  ASSERT_EQ(rc, 0) << msg;
  const nlohmann::json page = nlohmann::json::parse(between(read_file(out), "type=\"application/json\">", "</script>"));
  EXPECT_EQ(page["x"], "flops");
  std::map<std::string, nlohmann::json> charts;
  for (auto& c : page["charts"]) charts[c["key"]] = c["data"];
  const nlohmann::json& loss = charts.at("loss/out");
  ASSERT_EQ(loss[0].size(), metrics.size());
  for (size_t i = 0; i < metrics.size(); ++i)
    EXPECT_EQ(loss[0][i].get<double>(), metrics[i]["optim/total_flops"].get<double>());
  // Validation ran at steps 10 and 20: at those steps' FLOPs.
  const nlohmann::json& val = charts.at("eval: toy/nll_per_token");
  ASSERT_EQ(val[0].size(), 2u);
  EXPECT_NEAR(val[0][1].get<double>(), per_step * 20, 1e-9 * per_step * 20);
}
