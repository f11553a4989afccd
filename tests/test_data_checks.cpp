// End-to-end checks of how the tools report data problems: the trainer refuses validation without
// validation data before it trains, prints skipped input lines on the console, and documents
// checkpoint.eval.every; `lingua eval` and `lingua prepare` say what is missing or wrong.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lingua/core/error.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

size_t count_of(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1)) ++n;
  return n;
}

// A tiny byte-level run on `data` (source "toy") for the command line.
std::string tiny_cli_args(const fs::path& data, const fs::path& dump) {
  return "dump_dir=" + dump.string() + " data.root_dir=" + data.string() +
         " 'data.sources={toy: 1}' data.batch_size=2 data.seq_len=24 data.prefetch_size=2 data.load_async=false "
         "model.dim=32 model.n_layers=1 model.n_heads=2 model.multiple_of=16 model.max_seqlen=32 device=cpu "
         "steps=3 logging.freq=1 checkpoint.dump.every=0";
}

}  // namespace

TEST(DataChecks, TrainerRefusesValidationWithoutValidationDataBeforeTraining) {
  fs::path data = make_corpus("noval");
  fs::remove(data / "toy" / "toy.val.jsonl");
  fs::path dump = temp_dir("noval_dump");
  TrainConfig c = tiny_config(data, dump);  // checkpoint.eval.every = 10
  TrainHooks hooks;
  hooks.quiet = true;
  std::string msg;
  try {
    train(c, hooks);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("checkpoint.eval.every = 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no validation data"), std::string::npos) << msg;
  EXPECT_NE(msg.find(data.string()), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dump / "metrics.jsonl")) << "it trained before failing";

  // An empty validation file is no better; with validation off the run goes ahead.
  std::ofstream(data / "toy" / "toy.val.jsonl") << "{broken\n";
  msg.clear();
  try {
    train(c, hooks);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("toy.val.jsonl"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no token to score"), std::string::npos) << msg;
  c.checkpoint.eval.every = 0;
  c.steps = 2;
  EXPECT_EQ(train(c, hooks).final_step, 2);
}

TEST(DataChecks, SkippedLinesOnTheConsoleWhenTheCountGrows) {
  fs::path dir = temp_dir("skipped");
  fs::create_directories(dir / "data" / "toy");
  {
    // About 116 tokens a pass; each fill of the shuffle buffer takes 4 windows of 25 tokens, so
    // the fill of step 1 reads the malformed lines once and that of step 3 a second time.
    std::ofstream f(dir / "data" / "toy" / "toy.chunk.00.jsonl");
    f << "{broken\n{\"body\": \"no text\"}\n";
    for (int d = 0; d < 4; ++d) f << nlohmann::json({{"text", "the whale sees the ship " + std::to_string(d)}}).dump() << "\n";
  }
  auto [rc, out] = run_cli("train " + tiny_cli_args(dir / "data", dir / "dump"));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(count_of(out, "lingua: data: skipped "), 2u) << out;  // three status lines, two notes
  EXPECT_EQ(count_of(out, "lingua: data: skipped 2 malformed lines (bad JSON 1, no text/content 1, invalid UTF-8 0) "
                          "so far under " + (dir / "data").string()),
            1u)
      << out;
  EXPECT_EQ(count_of(out, "lingua: data: skipped 4 malformed lines (bad JSON 2, no text/content 2, invalid UTF-8 0)"), 1u)
      << out;
}

TEST(DataChecks, EvalEveryHelpSaysWhatItDoes) {
  auto [rc, out] = run_cli("train --help");
  ASSERT_EQ(rc, 0) << out;
  const size_t at = out.find("checkpoint.eval.every");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string line = out.substr(at, out.find('\n', at) - at);
  EXPECT_NE(line.find("run validation on"), std::string::npos) << line;
  EXPECT_NE(line.find("*.val.jsonl"), std::string::npos) << line;
  EXPECT_EQ(line.find("between saves"), std::string::npos) << line;
  const size_t keep = out.find("checkpoint.eval.keep");
  ASSERT_NE(keep, std::string::npos);
  EXPECT_NE(out.substr(keep, out.find('\n', keep) - keep).find("unused"), std::string::npos);
}

TEST(DataChecks, EvalAndPrepareSayWhatIsMissing) {
  fs::path dir = temp_dir("cli_checks");
  {
    std::ofstream f(dir / "book.txt");
    for (int i = 0; i < 40; ++i) f << "Call me Ishmael. Some years ago, never mind how long precisely.\n\n";
  }
  // val_fraction=0: no validation file, and the eval of the trained model says so.
  auto [rc, out] = run_cli("prepare out_dir=" + (dir / "data").string() + " source=toy min_doc_chars=100 val_fraction=0 " +
                           (dir / "book.txt").string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("0 validation documents"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir / "data" / "toy" / "toy.val.jsonl"));
  std::tie(rc, out) = run_cli("train " + tiny_cli_args(dir / "data", dir / "dump") + " steps=1");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_cli("eval ckpt=" + (dir / "dump").string());
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("no validation data"), std::string::npos) << out;
  EXPECT_EQ(out.find("nll_per_token 0.0000"), std::string::npos) << out;

  fs::create_directories(dir / "folder.jsonl");
  std::tie(rc, out) = run_cli("prepare out_dir=" + (dir / "d2").string() + " " + (dir / "folder.jsonl").string());
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("is a directory, expected a file"), std::string::npos) << out;
}
