// The tiktoken tokenizer (tiktoken.h) against the original: npm tiktoken's encoder (its Rust core
// as WASM, run with node: tests/tiktoken_reference.cjs) gives the same ids on the whole bundled
// corpus and on text with many scripts, emoji, runs of spaces and digits, special-token names and
// Unicode case, for cl100k_base (Llama 3's pre-tokenizer regex) and o200k_base (its own regex).
// Without node or the npm data (scripts/fetch_npm_data.sh) those tests skip. Also: Lingua's
// special ids, decoding, byte counts, invalid UTF-8, and errors that name the file and line.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/data/tokenizer_testing.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/tiktoken.h"

using namespace lingua;
using namespace lingua::tokenizer_testing;
namespace fs = std::filesystem;

namespace {

const std::string kTiktoken = kNpm + "/tiktoken";

std::string encoder_file(const std::string& name) { return kTiktoken + "/encoders/" + name + ".json"; }

bool have_reference() { return kPcre2 && fs::exists(encoder_file("cl100k_base")) && have_node(); }

std::vector<int32_t> reference_ids(const std::string& encoding, const fs::path& input) {
  return command_ids("node " + std::string(LINGUA_SOURCE_DIR) + "/tests/tiktoken_reference.cjs " + kTiktoken + " " +
                     encoding + " " + input.string());
}

}  // namespace

TEST(Tiktoken, SameIdsAsTheOriginalOnTheCorpusAndHardText) {
  if (!have_reference()) GTEST_SKIP() << "no node or no npm tiktoken data (scripts/fetch_npm_data.sh)";
  const std::string corpus = moby_dick(), hard = hard_text();
  ASSERT_GT(corpus.size(), 1000000u);
  for (const char* encoding : {"cl100k_base", "o200k_base"}) {
    SCOPED_TRACE(encoding);
    TiktokenTokenizer tok(encoder_file(encoding));
    for (const auto& [name, text] : {std::pair{"corpus", &corpus}, {"hard", &hard}}) {
      SCOPED_TRACE(name);
      const std::vector<int32_t> want = reference_ids(encoding, temp_file(name, *text));
      const std::vector<int32_t> got = tok.encode(*text, false, false);
      const std::string diff = first_difference(tok, got, want);
      if (!diff.empty()) FAIL() << diff;
      EXPECT_EQ(tok.decode(got), *text);
    }
  }
}

TEST(Tiktoken, LinguasSpecialIdsCountsAndDecoding) {
  if (!kPcre2 || !fs::exists(encoder_file("cl100k_base"))) GTEST_SKIP() << "no npm tiktoken data (scripts/fetch_npm_data.sh)";
  TiktokenTokenizer tok(encoder_file("cl100k_base"));
  const int n = 100256;  // cl100k's BPE ranks (its own special tokens are not used)
  EXPECT_EQ(tok.bos_id(), n);
  EXPECT_EQ(tok.eos_id(), n + 1);
  EXPECT_EQ(tok.n_words(), n + 256);
  const std::string text = hard_text();
  std::vector<int32_t> counts;
  const std::vector<int32_t> ids = tok.encode_with_byte_counts(text, true, true, &counts);
  EXPECT_EQ(ids.front(), n);
  EXPECT_EQ(ids.back(), n + 1);
  ASSERT_EQ(counts.size(), ids.size());
  EXPECT_EQ(counts.front(), 0);
  int64_t sum = 0;
  for (int32_t c : counts) sum += c;
  EXPECT_EQ(sum, (int64_t)text.size());
  EXPECT_EQ(tok.decode(ids), text);  // BOS / EOS skipped
  EXPECT_EQ(tok.decode({n + 2, n + 255, n + 100}), "<|fim_prefix|><|fim_suffix|><|reserved_special_token_100|>");
  EXPECT_THROW(tok.decode({n + 256}), Error);
  // A special token's name in a document is ordinary text.
  for (int32_t id : tok.encode("<|begin_of_text|>", false, false)) EXPECT_LT(id, n);
  // Invalid UTF-8 is encoded as its U+FFFD replacement.
  std::string bad = "caf\xc3 \xff\xfe ok \xe2\x82";
  std::string fixed = bad;
  sanitize_utf8(&fixed);
  EXPECT_EQ(tok.encode(bad, false, false), tok.encode(fixed, false, false));
  // Slices of 400,000 characters are pre-tokenised apart (Lingua): a word across the boundary splits.
  const std::string across = std::string(399998, ' ') + "abcd";
  const std::vector<int32_t> a = tok.encode(across, false, false);
  const std::vector<int32_t> head = tok.encode(std::string(399998, ' ') + "ab", false, false);
  const std::vector<int32_t> tail = tok.encode("cd", false, false);
  std::vector<int32_t> joined = head;
  joined.insert(joined.end(), tail.begin(), tail.end());
  EXPECT_EQ(a, joined);
}

TEST(Tiktoken, RankFileFormAndErrors) {
  if (!kPcre2) GTEST_SKIP() << "built without PCRE2";
  // The tiktoken file form ("<base64> <rank>" per line): every byte plus two merges.
  std::string file;
  auto b64 = [](const std::string& bytes) {
    static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < bytes.size(); i += 3) {
      uint32_t w = (uint8_t)bytes[i] << 16;
      if (i + 1 < bytes.size()) w |= (uint8_t)bytes[i + 1] << 8;
      if (i + 2 < bytes.size()) w |= (uint8_t)bytes[i + 2];
      out += t[w >> 18 & 63];
      out += t[w >> 12 & 63];
      out += i + 1 < bytes.size() ? t[w >> 6 & 63] : '=';
      out += i + 2 < bytes.size() ? t[w & 63] : '=';
    }
    return out;
  };
  for (int b = 0; b < 256; ++b) file += b64(std::string(1, (char)b)) + " " + std::to_string(b) + "\n";
  file += b64("ab") + " 256\n" + b64("abc") + " 257\n" + b64(" a") + " 258\n";
  TiktokenTokenizer tok(temp_file("tiny.tiktoken", file).string());
  EXPECT_EQ(tok.n_words(), 259 + 256);
  // "abc" is one rank; in " abd" the lowest-ranked pair ("ab", 256) merges before " a" (258).
  EXPECT_EQ(tok.encode("abc abd", false, false), (std::vector<int32_t>{257, ' ', 256, 'd'}));
  EXPECT_EQ(tok.encode(" a", false, false), (std::vector<int32_t>{258}));
  EXPECT_EQ(tok.decode({257, 258, 'b', 'd'}), "abc abd");

  auto error = [](const std::string& content) {
    try {
      TiktokenTokenizer t(temp_file("bad.tiktoken", content).string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error("QQ== 0\nnot-base64! 1\n").find("bad.tiktoken:2"), std::string::npos);
  EXPECT_NE(error("QQ== 0\n").find("byte 0 has no rank"), std::string::npos);
  EXPECT_NE(error("QQ== 0\nQQ== 1\n").find("appear twice"), std::string::npos);
  EXPECT_NE(error("QQ== 5\n").find("not contiguous"), std::string::npos);
  try {
    TiktokenTokenizer t("/nonexistent/tokenizer.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.model"), std::string::npos);
  }
}
