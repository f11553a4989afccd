#pragma once
// For the tokenizer parity tests: files in a per-process temporary directory, the bundled corpus,
// a reference encoder run as a command (node) that prints a JSON array of ids, text that pre-tokenizer
// regexes must split as the originals do, and the first difference of two id lists, shown as text.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "lingua/data/tokenizer.h"

namespace lingua::tokenizer_testing {

namespace fs = std::filesystem;

#if LINGUA_PCRE2
constexpr bool kPcre2 = true;  // (built without PCRE2, the regex tokenizers only say so)
#else
constexpr bool kPcre2 = false;
#endif

inline const std::string kNpm = std::string(LINGUA_SOURCE_DIR) + "/data/npm";

inline bool have_node() { return std::system("node --version > /dev/null 2>&1") == 0; }

inline fs::path temp_file(const std::string& name, const std::string& content) {
  const fs::path dir = fs::temp_directory_path() / ("lingua_tokenizers_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << content;
  return dir / name;
}

// The ids a reference command prints (a JSON array); fails the test when it exits non-zero.
inline std::vector<int32_t> command_ids(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[65536];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << cmd;
  return nlohmann::json::parse(out, nullptr, false).is_array() ? nlohmann::json::parse(out).get<std::vector<int32_t>>()
                                                                : std::vector<int32_t>{};
}

inline std::string moby_dick() {
  const fs::path raw = temp_file("moby.txt", "");
  const std::string cmd = "gunzip -c " + std::string(LINGUA_SOURCE_DIR) + "/data/demo/moby_dick.txt.gz > " + raw.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(raw, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Many scripts, emoji with joiners and modifiers, Unicode digits and spaces, contractions in any
// case, special-token names, and long runs of spaces, digits and newlines.
inline std::string hard_text() {
  std::string s =
      "Hello, WORLD! It's 'S THE'LL we'VE I'm 12345678901 3.14159 1,000,000\n\n\n"
      "Ünïcödé: façade naïve coöperate Straße ǅemal ſ ﬁne\r\n"
      "中文字符测试，日本語のテキスト、한국어 텍스트。 العربية עברית हिन्दी ไทย\n"
      "emoji 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ \t\ttabs\t and      many     spaces          \n"
      "<|begin_of_text|>special<|eot_id|> <|end_of_text|><|reserved_special_token_7|> <|endoftext|>\n"
      "code: for (int i = 0; i < n; ++i) { x[i] += 2; }\n"
      "digits٣٤٥ ²³ ½ Ⅻ 𝟙𝟚𝟛  \u00a0nbsp\u2003em\u3000ideographic   \n\n  trailing   ";
  s += std::string(3000, ' ') + "x" + std::string(500, '7') + std::string(2000, '\n') + "end";
  return s;
}

// "" when equal, else where the lists first differ, with the tokens around it decoded.
inline std::string first_difference(const Tokenizer& tok, const std::vector<int32_t>& got,
                                    const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  if (i == got.size() && i == want.size()) return "";
  const size_t from = i >= 3 ? i - 3 : 0;
  auto around = [&](const std::vector<int32_t>& v) {
    std::string s;
    for (size_t k = from; k < std::min(v.size(), i + 4); ++k) s += "[" + tok.decode({v[k]}) + "]";
    return s;
  };
  return "first difference at token " + std::to_string(i) + " of " + std::to_string(want.size()) + " (ours " +
         std::to_string(got.size()) + "): ours " + around(got) + " vs original " + around(want);
}

}  // namespace lingua::tokenizer_testing
