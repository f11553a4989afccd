// lingua plot and the end of lingua train: one self-contained HTML page with the charting library
// inlined, a chart per metric (training, validation, tasks), the runs' values exactly as their
// metrics files hold them; the page's scripts parse (node --check; no browser renders it here);
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
