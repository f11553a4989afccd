// Task evaluation (tasks.h), against plain references computed from full-sequence logits:
//  - loglikelihoods: lm-eval's tokenisation (trailing context spaces move to the continuation,
//    BOS first, left truncation to max_seqlen) and batch packing give each request's reference sum;
//  - multiple_choice: acc and acc_norm from those loglikelihoods, few-shot prompts as documented;
//  - loglikelihood_rolling: every token scored once, each with the context the windows give it;
//  - generate_until: greedy generation, stop strings, answer_regex;
//  - bad lines are skipped and counted; errors name the file and the key.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lingua/core/utf8.h"
#include "lingua/eval/tasks.h"
#include "lingua/exec/testing.h"
#include "lingua/generate/generate.h"

using namespace lingua;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny_model(const std::string& ffn = "swiglu") {
  ModelConfig c;
  c.ffn = ffn;  // stem: rows looked up by each position's token id, so batching must keep ids aligned
  c.dim = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = 258;  // bytes + BOS + EOS
  c.max_seqlen = 24;
  c.seed = 11;
  return c;
}

struct Fixture {
  explicit Fixture(const std::string& ffn = "swiglu") : cfg(tiny_model(ffn)) {}
  ModelConfig cfg;
  test_util::ModelRun run{cfg, resolve_dims(cfg, cfg.vocab_size)};
  std::unique_ptr<Tokenizer> tok = make_tokenizer(TokenizerConfig{});
};

// Reference: log p of tokens[i+1] given tokens[..i], summed over the last n targets, from the
// full-sequence logits of the last max_seqlen + 1 tokens.
double reference_ll(Executor& ex, std::vector<int32_t> tokens, int n) {
  const int L = ex.model().dims().max_seqlen, V = ex.model().dims().vocab;
  if ((int)tokens.size() > L + 1) tokens.erase(tokens.begin(), tokens.end() - (L + 1));
  const int T = (int)tokens.size() - 1;
  std::vector<float> logits((size_t)T * V);
  ex.forward_logits(tokens.data(), T, logits.data());
  double ll = 0;
  for (int t = T - n; t < T; ++t) {
    const float* row = logits.data() + (size_t)t * V;
    double mx = row[0], z = 0;
    for (int v = 1; v < V; ++v) mx = std::max(mx, (double)row[v]);
    for (int v = 0; v < V; ++v) z += std::exp(row[v] - mx);
    ll += row[tokens[t + 1]] - mx - std::log(z);
  }
  return ll;
}

std::vector<int32_t> bytes_with_bos(const std::string& s) {
  std::vector<int32_t> v = {256};
  for (unsigned char c : s) v.push_back(c);
  return v;
}

std::string write_lines(const std::string& name, const std::vector<std::string>& lines) {
  const fs::path dir = fs::temp_directory_path() / ("lingua_tasks_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path p = dir / name;
  std::ofstream f(p);
  for (auto& l : lines) f << l << "\n";
  return p.string();
}

}  // namespace

TEST(Tasks, LoglikelihoodsAreTheReferenceSumsInAnyBatching) {
  for (const char* ffn : {"swiglu", "stem"}) {
  SCOPED_TRACE(ffn);
  Fixture fx(ffn);
  Executor& ex = fx.run.exec;
  const std::vector<LoglikelihoodRequest> reqs = {
      {"The whale", " swam"},
      {"Call me  ", "Ishmael"},        // trailing spaces move to the continuation
      {"", "empty context"},            // predicted from BOS
      {"a much longer context that overflows the window of the model", " end"},  // truncated on the left
      {"x", "y"}};
  for (int64_t batch_tokens : {1, 30, 1000}) {
    SCOPED_TRACE(batch_tokens);
    const std::vector<double> got = loglikelihoods(ex, *fx.tok, reqs, true, batch_tokens);
    ASSERT_EQ(got.size(), reqs.size());
    EXPECT_NEAR(got[0], reference_ll(ex, bytes_with_bos("The whale swam"), 5), 1e-4);
    EXPECT_NEAR(got[1], reference_ll(ex, bytes_with_bos("Call me  Ishmael"), 9), 1e-4);
    EXPECT_NEAR(got[2], reference_ll(ex, bytes_with_bos("empty context"), 13), 1e-4);
    EXPECT_NEAR(got[3], reference_ll(ex, bytes_with_bos(reqs[3].context + reqs[3].continuation), 4), 1e-4);
    EXPECT_NEAR(got[4], reference_ll(ex, bytes_with_bos("xy"), 1), 1e-4);
    for (double g : got) EXPECT_LT(g, 0);
  }
  }
}

TEST(Tasks, MultipleChoiceAccAndAccNorm) {
  Fixture fx;
  Executor& ex = fx.run.exec;
  std::vector<std::string> lines;
  std::vector<std::vector<std::string>> choices = {{"ab", "abcdefgh", "q"}, {"zz", "y"}, {"hello", "world", "!"}};
  std::vector<int> gold = {1, 0, 2};
  for (size_t i = 0; i < choices.size(); ++i)
    lines.push_back(nlohmann::json{{"context", "ctx" + std::to_string(i)}, {"choices", choices[i]}, {"gold", gold[i]}}.dump());
  lines.push_back("{\"context\": \"broken\"}");  // skipped: no choices
  lines.push_back("not json");                  // skipped
  TaskConfig t;
  t.path = write_lines("mc.jsonl", lines);
  const TaskMetrics m = evaluate_task(ex, *fx.tok, t, true, 64);
  double acc = 0, acc_norm = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    size_t best = 0, best_norm = 0;
    double top = -1e30, top_norm = -1e30;
    for (size_t c = 0; c < choices[i].size(); ++c) {
      const std::string ctx = "ctx" + std::to_string(i);
      const double ll = reference_ll(ex, bytes_with_bos(ctx + " " + choices[i][c]), (int)choices[i][c].size() + 1);
      if (ll > top) top = ll, best = c;
      if (ll / choices[i][c].size() > top_norm) top_norm = ll / choices[i][c].size(), best_norm = c;
    }
    acc += best == (size_t)gold[i];
    acc_norm += best_norm == (size_t)gold[i];
  }
  EXPECT_DOUBLE_EQ(m.at("acc"), acc / 3);
  EXPECT_DOUBLE_EQ(m.at("acc_norm"), acc_norm / 3);
  EXPECT_EQ(m.at("examples"), 3);
  EXPECT_EQ(m.at("skipped_lines"), 2);
  EXPECT_EQ(task_name(t), "mc");

  t.num_fewshot = 3;  // more than the other examples
  EXPECT_THROW(evaluate_task(ex, *fx.tok, t, true, 64), Error);

  // Few-shot with two examples: each one's prompt is the other, as documented:
  // other.context + target_delimiter + other's gold choice + fewshot_delimiter + context.
  t.path = write_lines("mc2.jsonl", {lines[0], lines[1]});
  t.num_fewshot = 1;
  t.fewshot_delimiter = "|";
  t.target_delimiter = "=";
  const TaskMetrics f = evaluate_task(ex, *fx.tok, t, true, 64);
  double facc = 0;
  for (int i = 0; i < 2; ++i) {
    const int o = 1 - i;
    const std::string ctx = "ctx" + std::to_string(o) + "=" + choices[o][gold[o]] + "|ctx" + std::to_string(i);
    size_t best = 0;
    double top = -1e30;
    for (size_t c = 0; c < choices[i].size(); ++c) {
      const double ll = reference_ll(ex, bytes_with_bos(ctx + "=" + choices[i][c]), (int)choices[i][c].size() + 1);
      if (ll > top) top = ll, best = c;
    }
    facc += best == (size_t)gold[i];
  }
  EXPECT_DOUBLE_EQ(f.at("acc"), facc / 2);
}

TEST(Tasks, RollingScoresEveryTokenOnce) {
  Fixture fx;
  Executor& ex = fx.run.exec;
  const std::string doc = "Call me Ishmael. Some years ago - never mind how long precisely - having little money.";
  TaskConfig t;
  t.type = "loglikelihood_rolling";
  t.path = write_lines("roll.jsonl", {nlohmann::json{{"text", doc}}.dump()});
  const TaskMetrics m = evaluate_task(ex, *fx.tok, t, true, 50);
  // Reference: windows of max_seqlen (24) predictions; each window's input the 24 tokens before
  // its last target.
  const std::vector<int32_t> full = bytes_with_bos(doc);
  const int n = (int)full.size() - 1, L = 24;
  double ll = 0;
  for (int end = 0; end < n;) {
    const int pred = std::min(n - end, L), last = end + pred, start = std::max(0, last - L);
    ll += reference_ll(ex, std::vector<int32_t>(full.begin() + start, full.begin() + last + 1), pred);
    end = last;
  }
  EXPECT_NEAR(m.at("loglikelihood"), ll, 1e-3);
  EXPECT_NEAR(m.at("bits_per_byte"), -ll / doc.size() / std::log(2.0), 1e-6);
  const double words = 16;  // whitespace-separated pieces of doc
  EXPECT_NEAR(m.at("word_perplexity"), std::exp(-ll / words), 1e-6 * std::exp(-ll / words));
}

TEST(Tasks, GenerateUntilExactMatchWithRegex) {
  // A seed whose model decodes "Q: 1+1" greedily into valid UTF-8 (a task file holds only that),
  // then tasks whose answer is that output (or not).
  std::unique_ptr<test_util::ModelRun> run;
  std::unique_ptr<Tokenizer> tok = make_tokenizer(TokenizerConfig{});
  SamplingOptions opt;
  opt.temperature = 0;
  opt.max_gen_len = 2;
  std::string out;
  for (int seed = 1; seed < 200 && (out.empty() || !is_valid_utf8(out)); ++seed) {
    ModelConfig c = tiny_model();
    c.seed = seed;
    run = std::make_unique<test_util::ModelRun>(c, resolve_dims(c, c.vocab_size));
    PhiloxStream rng(0, 0);
    out = generate_text(run->exec, *tok, "Q: 1+1", opt, rng).text;
  }
  ASSERT_TRUE(!out.empty() && is_valid_utf8(out));
  Executor& ex = run->exec;
  TaskConfig t;
  t.type = "generate_until";
  t.max_gen_toks = 2;
  t.until = {};
  t.path = write_lines("gen.jsonl", {nlohmann::json{{"context", "Q: 1+1"}, {"answer", " " + out + " "}}.dump(),
                                     nlohmann::json{{"context", "Q: 1+1"}, {"answer", out + "x"}}.dump()});
  TaskMetrics m = evaluate_task(ex, *tok, t, true, 64);
  const bool blank = out.find_first_not_of(" \t\r\n") == std::string::npos;
  if (!blank) EXPECT_DOUBLE_EQ(m.at("exact_match"), 0.5);  // stripped equality only for the first
  t.answer_regex = "([\\s\\S])";  // the first byte of the output
  const bool ascii = (unsigned char)out[0] < 128 && !std::isspace((unsigned char)out[0]);
  t.path = write_lines("gen2.jsonl", {nlohmann::json{{"context", "Q: 1+1"}, {"answer", ascii ? out.substr(0, 1) : "?"}}.dump()});
  m = evaluate_task(ex, *tok, t, true, 64);
  EXPECT_DOUBLE_EQ(m.at("exact_match"), ascii || out[0] == '?' ? 1.0 : 0.0);
  t.answer_regex = "(Q)";  // no match: "[invalid]"
  t.path = write_lines("gen3.jsonl", {nlohmann::json{{"context", "Q: 1+1"}, {"answer", "[invalid]"}}.dump()});
  m = evaluate_task(ex, *tok, t, true, 64);
  EXPECT_DOUBLE_EQ(m.at("exact_match"), out.find('Q') == std::string::npos ? 1.0 : 0.0);
  t.answer_regex = "([";
  EXPECT_THROW(evaluate_task(ex, *tok, t, true, 64), Error);
}

TEST(Tasks, ErrorsNameTheFileAndKey) {
  TaskConfig t;
  t.path = "/nonexistent/task.jsonl";
  try {
    check_tasks({t}, "eval.tasks");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/task.jsonl"), std::string::npos) << e.what();
  }
  t.path = write_lines("empty.jsonl", {"{\"context\": 1}"});
  try {
    check_tasks({t}, "eval.tasks");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no multiple_choice example"), std::string::npos) << e.what();
  }
  TaskConfig a, b;
  a.path = b.path = write_lines("dup.jsonl", {"{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 0}"});
  try {
    check_tasks({a, b}, "eval.tasks");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("eval.tasks[1]"), std::string::npos) << e.what();
  }
}
