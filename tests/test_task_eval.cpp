// Task evaluation in training and in `lingua eval` (lingua/eval/tasks.h): eval.tasks are scored at
// every evaluation into metrics.eval.jsonl, kept in the checkpoint's params.json, and scored
// again by `lingua eval` (the checkpoint's tasks, tasks=, task_files=) with the same numbers; a
// bad task file stops training before the first step, naming the file; structured models score
// the same through their pre-merged weights and their factors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/eval/tasks.h"
#include "lingua/exec/testing.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// Which object a toy-corpus sentence ends with: the true one vs the other three.
std::string write_task(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path p = dir / "toy_objects.jsonl";
  std::ofstream f(p);
  const char* subj[] = {"the whale", "a sailor", "the captain", "the sea"};
  const char* obj[] = {"the ship.", "a storm.", "the harpoon.", "the moon."};
  for (int i = 0; i < 12; ++i)
    f << nlohmann::json{{"context", std::string(subj[i % 4]) + " sees"},
                        {"choices", {obj[0], obj[1], obj[2], obj[3]}},
                        {"gold", (i / 4) % 4}}
             .dump()
      << "\n";
  f << "{\"context\": \"no choices\"}\n";  // skipped and counted
  return p.string();
}

}  // namespace

TEST(TaskEval, TrainingScoresTasksAndLinguaEvalAgrees) {
  const fs::path data = make_corpus("task_eval");
  TrainConfig c = tiny_config(data, temp_dir("task_eval_run"));
  TaskConfig t;
  t.path = write_task(temp_dir("task_eval_tasks"));
  t.name = "objects";
  TaskConfig roll;
  roll.type = "loglikelihood_rolling";
  roll.name = "val_text";
  roll.path = (data / "toy" / "toy.val.jsonl").string();  // {"text": ...} lines
  c.eval.tasks = {t, roll};
  train(c, {nullptr, true});

  const auto evals = read_jsonl(fs::path(c.dump_dir) / "metrics.eval.jsonl");
  ASSERT_EQ(evals.size(), 2u);  // steps 10 and 20
  const nlohmann::json& last = evals.back();
  for (const char* k : {"objects/acc", "objects/acc_norm", "objects/acc_stderr", "val_text/bits_per_byte",
                        "val_text/word_perplexity"})
    EXPECT_TRUE(last.contains(k)) << k << "\n" << last.dump();
  EXPECT_EQ(last["objects/examples"], 12);
  EXPECT_EQ(last["objects/skipped_lines"], 1);

  // The checkpoint keeps the tasks; `lingua eval` scores them the same way.
  LoadedModel m = load_model(c.dump_dir);
  ASSERT_EQ(m.config.eval.tasks.size(), 2u);
  EXPECT_EQ(m.config.eval.tasks[0].path, t.path);
  const TaskMetrics again = evaluate_task(*m.exec, *m.tokenizer, m.config.eval.tasks[0], true, 64);
  EXPECT_DOUBLE_EQ(again.at("acc"), last["objects/acc"].get<double>());
  EXPECT_DOUBLE_EQ(again.at("acc_norm"), last["objects/acc_norm"].get<double>());

  auto [rc, out] = run_cli("eval ckpt=" + c.dump_dir + " validation=false");
  ASSERT_EQ(rc, 0) << out;
  char acc[128];
  std::snprintf(acc, sizeof acc, "%-24s %-22s %10.4f", "objects", "acc", last["objects/acc"].get<double>());
  EXPECT_NE(out.find(acc), std::string::npos) << out << acc;
  EXPECT_NE(out.find("val_text"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("eval ckpt=" + c.dump_dir + " validation=false task_files='[" + t.path + "]'");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("toy_objects"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("eval ckpt=" + c.dump_dir + " validation=false tasks='[{path: /nonexistent.jsonl}]'");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("/nonexistent.jsonl"), std::string::npos) << out;
}

TEST(TaskEval, ABadTaskFileStopsTrainingBeforeTheFirstStep) {
  const fs::path data = make_corpus("task_eval_bad");
  TrainConfig c = tiny_config(data, temp_dir("task_eval_bad_run"));
  TaskConfig t;
  t.path = (temp_dir("task_eval_bad") / "missing.jsonl").string();
  c.eval.tasks = {t};
  const std::string err = error_of([&] { train(c, {nullptr, true}); });
  EXPECT_NE(err.find("missing.jsonl"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(fs::path(c.dump_dir) / "metrics.jsonl"));
}

// Task scoring composes with the FFN variants: on a structured model, requests scored one at a
// time (few rows: the pre-merged weights) and packed into large batches (the factors) agree, and
// a multiple-choice task gives the same numbers either way.
TEST(TaskEval, StructuredModelsScoreTheSameMergedOrFactored) {
  for (const char* ffn : {"lowrank", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    ModelConfig c;
    c.dim = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.multiple_of = 8;
    c.vocab_size = 258;
    c.max_seqlen = 32;
    c.seed = 3;
    c.ffn = ffn;
    c.structured.rank = 8;
    c.structured.nblocks = 2;
    test_util::ModelRun run(c, resolve_dims(c, c.vocab_size), Device::cpu,
                            [&](Transformer& m) { make_ffns_matter(m, c); });
    std::unique_ptr<Tokenizer> tok = make_tokenizer(TokenizerConfig{});
    const std::vector<LoglikelihoodRequest> reqs = {{"the whale", " sees"}, {"a sail", "or"}, {"x", "y"}};
    const std::vector<double> one = loglikelihoods(run.exec, *tok, reqs, true, 1);      // B = 1: <= 16 rows
    const std::vector<double> packed = loglikelihoods(run.exec, *tok, reqs, true, 4096);  // one batch of 3 x 14 rows
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_NEAR(one[i], packed[i], 1e-4 * (1 + std::fabs(packed[i]))) << i;
    TaskConfig t;
    t.path = write_task(temp_dir(std::string("task_eval_") + ffn));
    const TaskMetrics a = evaluate_task(run.exec, *tok, t, true, 1), b = evaluate_task(run.exec, *tok, t, true, 4096);
    EXPECT_EQ(a.at("acc"), b.at("acc"));
    EXPECT_EQ(a.at("acc_norm"), b.at("acc_norm"));
  }
}
