// tiktoken BPE (tiktoken.h).
#include "lingua/data/tiktoken.h"


#include <climits>
#include <queue>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/core/utf8.h"
#include "lingua/data/jsonl.h"

namespace lingua {

namespace {

// Standard base64 (RFC 4648) with padding; false on anything else.
bool base64_decode(std::string_view s, std::string* out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  out->clear();
  if (s.size() % 4 != 0) return false;
  for (size_t i = 0; i < s.size(); i += 4) {
    int v[4], pad = 0;
    for (int k = 0; k < 4; ++k) {
      if (s[i + k] == '=' && i + 4 == s.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else if (pad > 0 || (v[k] = value(s[i + k])) < 0) {
        return false;
      }
    }
    const uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
    out->push_back((char)(w >> 16));
    if (pad < 2) out->push_back((char)(w >> 8 & 0xff));
    if (pad < 1) out->push_back((char)(w & 0xff));
  }
  return true;
}

// Lingua's special tokens by offset after the BPE ids; the rest are reserved.
std::vector<std::string> special_token_names() {
  std::vector<std::string> names(TiktokenTokenizer::kSpecial);
  for (int i = 0; i < TiktokenTokenizer::kSpecial; ++i) names[i] = "<|reserved_special_token_" + std::to_string(i) + "|>";
  names[0] = "<|begin_of_text|>";
  names[1] = "<|end_of_text|>";
  names[2] = "<|fim_prefix|>";
  names[3] = "<|fim_middle|>";
  names[253] = "<|fim_end_fill|>";
  names[254] = "<|fim_pad|>";
  names[255] = "<|fim_suffix|>";
  return names;
}

constexpr size_t kMaxEncodeChars = 400000;  // Lingua's TIKTOKEN_MAX_ENCODE_CHARS

}  // namespace

const char* TiktokenTokenizer::llama3_pattern() {
  return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}

TiktokenTokenizer::TiktokenTokenizer(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  LINGUA_CHECK(in.good(), "tiktoken: cannot read the rank file '", path, "' (data.tokenizer.path)");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string content = ss.str();
  std::string pattern = llama3_pattern();
  auto add_rank = [&](const std::string& b64, long long rank, const std::string& where) {
    std::string bytes;
    LINGUA_CHECK(base64_decode(b64, &bytes) && !bytes.empty(), "tiktoken: ", where, ": '", b64.substr(0, 40),
                 "' is not base64 of a token's bytes");
    LINGUA_CHECK(rank >= 0 && rank < INT_MAX - kSpecial, "tiktoken: ", where, ": rank ", rank, " out of range");
    LINGUA_CHECK(ranks_.emplace(bytes, (int32_t)rank).second, "tiktoken: ", where, ": the bytes of rank ", rank,
                 " appear twice");
    if ((size_t)rank >= bytes_.size()) bytes_.resize((size_t)rank + 1);
    bytes_[(size_t)rank] = std::move(bytes);
  };
  const size_t first = content.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && content[first] == '{') {  // npm tiktoken's encoders/<name>.json
    const nlohmann::json j = nlohmann::json::parse(content, nullptr, false);
    LINGUA_CHECK(!j.is_discarded() && j.contains("bpe_ranks") && j["bpe_ranks"].is_string(), "tiktoken: ", path,
                 " is JSON but not npm tiktoken's encoder form (pat_str, special_tokens, bpe_ranks)");
    if (j.contains("pat_str") && j["pat_str"].is_string()) pattern = j["pat_str"].get<std::string>();
    // Lines of "! <first rank> <base64> <base64> ...": consecutive ranks from the first.
    std::stringstream lines(j["bpe_ranks"].get<std::string>());
    std::string line;
    for (int n = 1; std::getline(lines, line); ++n) {
      std::stringstream fields(line);
      std::string mark, b64;
      long long rank = -1;
      if (!(fields >> mark >> rank)) continue;  // (a blank line)
      while (fields >> b64) add_rank(b64, rank++, path + " bpe_ranks line " + std::to_string(n));
    }
  } else {  // "<base64> <rank>" per line
    std::stringstream lines(content);
    std::string line;
    for (int n = 1; std::getline(lines, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::stringstream fields(line);
      std::string b64;
      long long rank = -1;
      LINGUA_CHECK(fields >> b64 >> rank, "tiktoken: ", path, ":", n, ": expected '<base64> <rank>', got '",
                   line.substr(0, 60), "'");
      add_rank(b64, rank, path + ":" + std::to_string(n));
    }
  }
  LINGUA_CHECK(!ranks_.empty(), "tiktoken: ", path, " holds no rank");
  n_ranks_ = (int)bytes_.size();
  for (size_t i = 0; i < bytes_.size(); ++i)
    LINGUA_CHECK(!bytes_[i].empty(), "tiktoken: ", path, ": ranks are not contiguous (no token has rank ", i, ")");
  for (int b = 0; b < 256; ++b)
    LINGUA_CHECK(ranks_.count(std::string(1, (char)b)), "tiktoken: ", path, ": byte ", b,
                 " has no rank (every single byte must be a token)");
  special_names_ = special_token_names();

  regex_ = std::make_unique<RegexSplitter>(pattern, "tiktoken");
  pattern_ = pattern;
}

TiktokenTokenizer::~TiktokenTokenizer() = default;

int32_t TiktokenTokenizer::rank_of(std::string_view bytes) const {
  const auto it = ranks_.find(bytes);
  return it == ranks_.end() ? -1 : it->second;
}

void TiktokenTokenizer::bpe(std::string_view piece, std::vector<int32_t>* out) const {
  if (const int32_t r = rank_of(piece); r >= 0) {
    out->push_back(r);
    return;
  }
  // Parts as a linked list over the piece's bytes; a min-heap of (rank of merging a part with the
  // next, start) pops the lowest rank, leftmost on ties, skipping entries made stale by a merge.
  const int n = (int)piece.size();
  std::vector<int> next(n), prev(n), end(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) next[i] = i + 1, prev[i] = i - 1, end[i] = i + 1;
  using Entry = std::pair<int64_t, int>;  // (rank, start)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  auto merged_rank = [&](int i) -> int64_t {  // part i merged with its next, or -1
    if (next[i] >= n) return -1;
    return rank_of(piece.substr(i, end[next[i]] - i));
  };
  std::vector<int64_t> current(n, -1);  // the heap entry of part i that is still valid
  auto push = [&](int i) {
    current[i] = merged_rank(i);
    if (current[i] >= 0) heap.push({current[i], i});
  };
  for (int i = 0; i < n; ++i) push(i);
  while (!heap.empty()) {
    const auto [rank, i] = heap.top();
    heap.pop();
    if (!alive[i] || current[i] != rank) continue;
    const int j = next[i];  // merge part j into part i
    end[i] = end[j];
    next[i] = next[j];
    if (next[i] < n) prev[next[i]] = i;
    alive[j] = false;
    push(i);
    if (prev[i] >= 0) push(prev[i]);
  }
  for (int i = 0; i < n; i = next[i]) out->push_back(rank_of(piece.substr(i, end[i] - i)));
}

std::vector<int32_t> TiktokenTokenizer::encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                                                std::vector<int32_t>* byte_counts) const {
  std::string fixed;
  text = as_valid_utf8(text, &fixed);
  std::vector<int32_t> ids;
  if (add_bos) ids.push_back(bos_id());
  // Slices of kMaxEncodeChars characters, each pre-tokenised on its own (Lingua's encode).
  for (size_t s0 = 0; s0 < text.size();) {
    size_t s1 = s0, chars = 0;
    while (s1 < text.size() && chars < kMaxEncodeChars) {
      ++s1;
      while (s1 < text.size() && ((unsigned char)text[s1] & 0xC0) == 0x80) ++s1;
      ++chars;
    }
    regex_->split(text.substr(s0, s1 - s0), [&](std::string_view piece) { bpe(piece, &ids); });
    s0 = s1;
  }
  if (add_eos) ids.push_back(eos_id());
  if (byte_counts) {
    byte_counts->clear();
    for (int32_t id : ids) byte_counts->push_back(id < n_ranks_ ? (int32_t)bytes_[(size_t)id].size() : 0);
  }
  return ids;
}

std::vector<int32_t> TiktokenTokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  return encode_with_byte_counts(text, add_bos, add_eos, nullptr);
}

std::string TiktokenTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) {
    LINGUA_CHECK(id >= 0 && id < n_words(), "tiktoken: id ", id, " is outside the vocabulary [0, ", n_words(), ")");
    if (id == bos_id() || id == eos_id()) continue;
    s += id < n_ranks_ ? bytes_[(size_t)id] : special_names_[(size_t)(id - n_ranks_)];
  }
  return s;
}

}  // namespace lingua
