// Tests of evaluate_validation and check_validation_data on a tiny CPU model: every token but the
// first scored once, per-byte and per-char figures over the text of the scored tokens only (also
// when max_tokens stops a source mid-document), and an empty validation set is an error.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "lingua/data/testing.h"
#include "lingua/eval/validation.h"
#include "lingua/exec/testing.h"
#include "lingua/model/dims.h"

using namespace lingua;
using namespace lingua::test_util;
namespace fs = std::filesystem;

namespace {

constexpr double kLn2 = 0.6931471805599453;

// Multi-byte characters (é, —, 日本語) so that bytes, characters and tokens all differ.
const std::vector<std::string> kDocs = {
    "Call me Ishmael. Some years ago \xE2\x80\x94 never mind how long pr\xC3\xA9" "cisely \xE2\x80\x94 I went.",
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E text, then more plain text to fill a window or two.",
    "short",
};

struct Fixture {
  TempDir root;
  BytesTokenizer tok;
  DataConfig data;
  ModelConfig mc;
  std::unique_ptr<ModelRun> run;
  Fixture() {
    write_file(root.path / "s" / "s.chunk.00.jsonl", jsonl_of({"training text"}));
    write_file(root.path / "s" / "s.val.jsonl", jsonl_of(kDocs));
    data.root_dir = root.str();
    data.sources = {{"s", 1.0}};
    data.seq_len = 16;
    data.batch_size = 2;
    mc.dim = 16;
    mc.n_layers = 1;
    mc.n_heads = 2;
    mc.n_kv_heads = 1;
    mc.multiple_of = 8;
    mc.max_seqlen = 16;
    mc.seed = 3;
    run = std::make_unique<ModelRun>(mc, resolve_dims(mc, tok.n_words()));
  }
  // The validation stream as the loader's rules make it: documents tokenised and concatenated.
  std::vector<int32_t> stream() const {
    std::vector<int32_t> s;
    for (const auto& d : kDocs) {
      auto ids = tok.encode(d, data.add_bos, data.add_eos);
      s.insert(s.end(), ids.begin(), ids.end());
    }
    return s;
  }
  // nll of targets stream[1..n_targets], one window of seq_len at a time (context restarts at
  // every multiple of seq_len), independently of evaluate_validation's batching.
  double reference_nll(const std::vector<int32_t>& s, int64_t n_targets) {
    const int T = data.seq_len;
    double nll = 0;
    for (int64_t start = 0; start < n_targets; start += T) {
      std::vector<int32_t> in(T, 0), tg(T, -1);
      for (int t = 0; t < T; ++t) {
        const int64_t i = start + t;
        if (i < (int64_t)s.size()) in[t] = s[i];
        if (i + 1 <= n_targets) tg[t] = s[i + 1];
      }
      nll += run->exec.forward_loss(in.data(), tg.data(), 1, T).nll;
    }
    return nll;
  }
};

// Bytes and characters of the byte tokens stream[1..n_targets] (BOS/EOS: none).
std::pair<int64_t, int64_t> bytes_and_chars(const std::vector<int32_t>& s, int64_t n_targets) {
  int64_t bytes = 0, chars = 0;
  for (int64_t i = 1; i <= n_targets; ++i)
    if (s[i] < 256) {
      ++bytes;
      chars += (s[i] & 0xC0) != 0x80;
    }
  return {bytes, chars};
}

}  // namespace

TEST(EvaluateValidation, FullEvaluationScoresEveryTokenButTheFirst) {
  Fixture f;
  const std::vector<int32_t> s = f.stream();
  auto res = evaluate_validation(f.run->exec, f.tok, f.data, 0);
  ASSERT_EQ(res.size(), 1u);
  const ValidationResult& r = res.at("s");
  int64_t doc_bytes = 0, doc_chars = 0;
  for (const auto& d : kDocs) doc_bytes += (int64_t)d.size(), doc_chars += utf8_length(d);
  EXPECT_EQ(r.documents, 3);
  EXPECT_EQ(r.tokens, (int64_t)s.size() - 1);
  // With BOS the first token carries no text: the whole documents are scored, as before.
  EXPECT_EQ(r.bytes, doc_bytes);
  EXPECT_EQ(r.chars, doc_chars);
  const double nll = f.reference_nll(s, (int64_t)s.size() - 1);
  EXPECT_NEAR(r.nll, nll, 1e-5 * nll);
  EXPECT_NEAR(r.bits_per_byte(), nll / (doc_bytes * kLn2), 1e-5);
  EXPECT_NEAR(r.nll_per_char(), nll / doc_chars, 1e-5);

  // Without BOS the first byte is context only, and so not counted.
  f.data.add_bos = false;
  const std::vector<int32_t> s2 = f.stream();
  const ValidationResult r2 = evaluate_validation(f.run->exec, f.tok, f.data, 0).at("s");
  EXPECT_EQ(r2.tokens, (int64_t)s2.size() - 1);
  EXPECT_EQ(r2.bytes, doc_bytes - 1);
  EXPECT_EQ(r2.chars, doc_chars - 1);
}

TEST(EvaluateValidation, MaxTokensCountsOnlyTheScoredText) {
  Fixture f;
  const std::vector<int32_t> s = f.stream();
  const int64_t per_batch = (int64_t)f.data.batch_size * f.data.seq_len;
  ASSERT_GT((int64_t)kDocs[0].size(), per_batch + 1);  // the first batch ends inside the first document
  // max_tokens 1: the first batch; 40: the second too (it reaches into the second document).
  for (int64_t max_tokens : {int64_t{1}, int64_t{40}}) {
    const int64_t scored = max_tokens <= per_batch ? per_batch : 2 * per_batch;
    const ValidationResult r = evaluate_validation(f.run->exec, f.tok, f.data, max_tokens).at("s");
    ASSERT_EQ(r.tokens, scored) << max_tokens;
    auto [bytes, chars] = bytes_and_chars(s, scored);
    EXPECT_EQ(r.bytes, bytes) << max_tokens;
    EXPECT_EQ(r.chars, chars) << max_tokens;
    EXPECT_LT(r.bytes, (int64_t)kDocs[0].size() + (max_tokens > per_batch ? (int64_t)kDocs[1].size() : 0));
    const double nll = f.reference_nll(s, scored);
    EXPECT_NEAR(r.nll, nll, 1e-5 * nll);
    EXPECT_NEAR(r.bits_per_byte(), nll / (bytes * kLn2), 1e-5) << max_tokens;
    EXPECT_NEAR(r.nll_per_char(), nll / chars, 1e-5) << max_tokens;
    // An untrained byte model is near ln(258) nats per byte: about 8 bits, not a fraction of one.
    EXPECT_GT(r.bits_per_byte(), 6.0);
  }
}

TEST(EvaluateValidation, EmptyValidationSetIsAnError) {
  Fixture f;
  const std::string root = f.root.str();
  // A second source without *.val.jsonl is left out; the first is still evaluated.
  write_file(f.root.path / "t" / "t.chunk.00.jsonl", jsonl_of({"x"}));
  f.data.sources = {{"s", 1.0}, {"t", 1.0}};
  auto res = evaluate_validation(f.run->exec, f.tok, f.data, 0);
  EXPECT_EQ(res.size(), 1u);
  EXPECT_TRUE(res.count("s"));
  EXPECT_NO_THROW(check_validation_data(f.data, f.tok, "ctx: "));

  // No source with validation files.
  f.data.sources = {{"t", 1.0}};
  std::string msg = error_of([&] { evaluate_validation(f.run->exec, f.tok, f.data, 0); });
  EXPECT_NE(msg.find("no validation data"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.sources (t)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.root_dir " + root), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { check_validation_data(f.data, f.tok, "ctx: "); }), "ctx: " + msg);

  // Validation files without a single document: the source, its file and the skipped lines named.
  write_file(f.root.path / "t" / "t.val.jsonl", "{broken\n{\"body\": 1}\n\n");
  msg = error_of([&] { evaluate_validation(f.run->exec, f.tok, f.data, 0); });
  EXPECT_NE(msg.find("source 't'"), std::string::npos) << msg;
  EXPECT_NE(msg.find((f.root.path / "t" / "t.val.jsonl").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("0 documents"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 malformed lines"), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { check_validation_data(f.data, f.tok, "ctx: "); }), "ctx: " + msg);

  // Documents, but no token to score: empty texts without BOS/EOS, or one token in all.
  write_file(f.root.path / "t" / "t.val.jsonl", jsonl_of({"", ""}));
  f.data.add_bos = f.data.add_eos = false;
  msg = error_of([&] { evaluate_validation(f.run->exec, f.tok, f.data, 0); });
  EXPECT_NE(msg.find("2 documents and no token to score"), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { check_validation_data(f.data, f.tok, "ctx: "); }), "ctx: " + msg);
  write_file(f.root.path / "t" / "t.val.jsonl", jsonl_of({"", "a"}));
  EXPECT_NE(error_of([&] { evaluate_validation(f.run->exec, f.tok, f.data, 0); }).find("no token to score"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_validation_data(f.data, f.tok, "ctx: "); }).find("no token to score"),
            std::string::npos);
  write_file(f.root.path / "t" / "t.val.jsonl", jsonl_of({"", "ab"}));  // two tokens: one scored
  EXPECT_EQ(evaluate_validation(f.run->exec, f.tok, f.data, 0).at("t").tokens, 1);
  EXPECT_NO_THROW(check_validation_data(f.data, f.tok, "ctx: "));
}
