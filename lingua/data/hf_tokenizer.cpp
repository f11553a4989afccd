// Hugging Face tokenizer.json, byte-level BPE (hf_tokenizer.h).
#include "lingua/data/hf_tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <tuple>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/core/utf8.h"
#include "lingua/data/jsonl.h"

namespace lingua {

namespace {

std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += (char)cp;
  } else if (cp < 0x800) {
    s += (char)(0xC0 | cp >> 6);
    s += (char)(0x80 | (cp & 0x3F));
  } else {
    s += (char)(0xE0 | cp >> 12);
    s += (char)(0x80 | (cp >> 6 & 0x3F));
    s += (char)(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's printable stand-in for each byte: the printable Latin-1 bytes are themselves, the other
// 68 take the code points from 256 up, in byte order.
uint32_t byte_code_point(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (printable) return (uint32_t)b;
  uint32_t n = 0;
  for (int c = 0; c < b; ++c) n += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255));
  return 256 + n;
}

}  // namespace

std::string gpt2_byte_char(int b) { return utf8_of(byte_code_point(b)); }

namespace {

// A SentencePiece-style vocabulary string as text: "▁" is a space, "<0xXX>" the byte XX.
std::string sentencepiece_text(const std::string& s) {
  if (s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>')
    return std::string(1, (char)std::stoi(s.substr(3, 2), nullptr, 16));
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 3, "\xE2\x96\x81") == 0) {
      out += ' ';
      i += 3;
    } else {
      out += s[i++];
    }
  }
  return out;
}

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

HfTokenizer::HfTokenizer(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  LINGUA_CHECK(in.good(), "hf tokenizer: cannot read '", path, "' (data.tokenizer.path: a tokenizer.json)");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  LINGUA_CHECK(!j.is_discarded() && j.is_object() && j.contains("model"), "hf tokenizer: ", path,
               " is not a tokenizer.json (a JSON object with a \"model\")");
  const nlohmann::json& m = j["model"];
  auto unsupported = [&](const std::string& field, const std::string& value) {
    fail("hf tokenizer: ", path, ": ", field, " ", value, " is not supported (supported: byte-level BPE as Llama 3 and "
         "GPT-2 ship it; SentencePiece-style BPE with Metaspace / byte_fallback, as Llama 2 and Mistral, is not yet)");
  };
  if (m.value("type", std::string("BPE")) != "BPE") unsupported("model.type", m.value("type", ""));
  // SentencePiece-style BPE (Llama 2, Mistral): normalizer Sequence [Prepend "▁", Replace " " -> "▁"],
  // no pre-tokenizer, characters as symbols with byte fallback.
  const nlohmann::json sp_normalizer = nlohmann::json::parse(
      R"({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
          {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]})");
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    if (j["normalizer"] != sp_normalizer) unsupported("normalizer", j["normalizer"].dump().substr(0, 80));
    sentencepiece_ = true;
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null())
      unsupported("pre_tokenizer (with the SentencePiece normalizer)", j["pre_tokenizer"].dump().substr(0, 80));
  }
  byte_fallback_ = m.value("byte_fallback", false);
  fuse_unk_ = m.value("fuse_unk", false);
  if (byte_fallback_ && !sentencepiece_) unsupported("model.byte_fallback", "without the SentencePiece normalizer");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && m[k].is_string() && !m[k].get<std::string>().empty()) unsupported(std::string("model.") + k, m[k]);
  ignore_merges_ = m.value("ignore_merges", false);

  // Pre-tokenizer: ByteLevel (its GPT-2 regex) or Sequence [Split (Isolated), ByteLevel].
  std::string pattern;
  const nlohmann::json pre = j.value("pre_tokenizer", nlohmann::json());
  if (!sentencepiece_) {
  auto byte_level = [&](const nlohmann::json& p) {
    if (p.value("type", "") != "ByteLevel") return false;
    add_prefix_space_ = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) pattern = kGpt2Pattern;
    return true;
  };
  if (!byte_level(pre)) {
    const bool sequence = pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
                          pre["pretokenizers"].size() == 2;
    if (!sequence) unsupported("pre_tokenizer", pre.dump().substr(0, 80));
    const nlohmann::json& split = pre["pretokenizers"][0];
    if (split.value("type", "") != "Split" || split.value("behavior", "") != "Isolated" || split.value("invert", false) ||
        !split.contains("pattern") || !split["pattern"].contains("Regex"))
      unsupported("pre_tokenizer.pretokenizers[0]", split.dump().substr(0, 80));
    if (!byte_level(pre["pretokenizers"][1]) || !pattern.empty())
      unsupported("pre_tokenizer.pretokenizers[1]", pre["pretokenizers"][1].dump().substr(0, 80));
    pattern = split["pattern"]["Regex"].get<std::string>();
  }
  regex_ = std::make_unique<RegexSplitter>(pattern, "hf tokenizer");
  }

  std::unordered_map<std::string, int> char_byte;  // GPT-2 character -> byte
  for (int b = 0; b < 256; ++b) {
    byte_char_[b] = utf8_of(byte_code_point(b));
    char_byte[byte_char_[b]] = b;
  }
  auto raw_bytes = [&](const std::string& s) {  // a byte-level string back to its bytes
    std::string out;
    for (size_t i = 0; i < s.size();) {
      const size_t n = std::max<size_t>(1, utf8_sequence_length(s, i));
      const auto it = char_byte.find(s.substr(i, n));
      if (it == char_byte.end()) return std::string();  // not a byte-level string
      out += (char)it->second;
      i += n;
    }
    return out;
  };
  LINGUA_CHECK(m.contains("vocab") && m["vocab"].is_object(), "hf tokenizer: ", path, ": model.vocab is missing");
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    const int64_t id = it.value().get<int64_t>();
    LINGUA_CHECK(id >= 0 && id < (1 << 30), "hf tokenizer: ", path, ": model.vocab id ", id, " out of range");
    vocab_[it.key()] = (int32_t)id;
    if ((size_t)id >= bytes_.size()) bytes_.resize((size_t)id + 1);
    bytes_[(size_t)id] = sentencepiece_ ? sentencepiece_text(it.key()) : raw_bytes(it.key());
  }
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    const auto it = vocab_.find(sentencepiece_ ? std::string(hex) : byte_char_[b]);
    if (sentencepiece_ && !byte_fallback_) {
      byte_id_[b] = it == vocab_.end() ? -1 : it->second;
      continue;
    }
    LINGUA_CHECK(it != vocab_.end(), "hf tokenizer: ", path, ": byte ", b, " has no token (",
                 sentencepiece_ ? "no byte fallback token " + std::string(hex) : std::string("not a byte-level vocabulary"),
                 ")");
    byte_id_[b] = it->second;
  }
  if (m.contains("unk_token") && m["unk_token"].is_string())
    if (const auto it = vocab_.find(m["unk_token"].get<std::string>()); it != vocab_.end()) unk_ = it->second;
  const nlohmann::json& merges = m.value("merges", nlohmann::json::array());
  for (size_t r = 0; r < merges.size(); ++r) {
    std::string a, b;
    if (merges[r].is_string()) {
      const std::string s = merges[r].get<std::string>();
      const size_t sp = s.find(' ', 1);
      LINGUA_CHECK(sp != std::string::npos, "hf tokenizer: ", path, ": model.merges[", r, "] '", s, "' is not 'a b'");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      LINGUA_CHECK(merges[r].is_array() && merges[r].size() == 2, "hf tokenizer: ", path, ": model.merges[", r,
                   "] is neither 'a b' nor [a, b]");
      a = merges[r][0].get<std::string>();
      b = merges[r][1].get<std::string>();
    }
    const auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
    LINGUA_CHECK(ia != vocab_.end() && ib != vocab_.end() && iab != vocab_.end(), "hf tokenizer: ", path,
                 ": model.merges[", r, "] ('", a, "', '", b, "') names a token not in model.vocab");
    merges_.emplace((uint64_t)(uint32_t)ia->second << 32 | (uint32_t)ib->second, std::pair{(int32_t)r, iab->second});
  }
  for (const nlohmann::json& t : j.value("added_tokens", nlohmann::json::array())) {
    const std::string content = t.value("content", "");
    const int64_t id = t.value("id", (int64_t)-1);
    LINGUA_CHECK(!content.empty() && id >= 0 && id < (1 << 30), "hf tokenizer: ", path, ": an added token without ",
                 "content or id: ", t.dump().substr(0, 80));
    added_.push_back({content, (int32_t)id});
    if ((size_t)id >= bytes_.size()) bytes_.resize((size_t)id + 1);
    bytes_[(size_t)id] = content;
  }
  std::stable_sort(added_.begin(), added_.end(), [](auto& x, auto& y) { return x.first.size() > y.first.size(); });
  for (auto& [c, id] : added_) added_first_[(unsigned char)c[0]] = true;
  auto added_id = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      for (auto& [c, id] : added_)
        if (c == n) return (int)id;
    return -1;
  };
  bos_ = added_id({"<|begin_of_text|>", "<s>", "<|endoftext|>"});
  eos_ = added_id({"<|end_of_text|>", "</s>", "<|endoftext|>"});
}

HfTokenizer::~HfTokenizer() = default;

void HfTokenizer::bpe(std::string_view piece, std::vector<int32_t>* out) const {
  std::string mapped;
  for (unsigned char c : piece) mapped += byte_char_[c];
  if (ignore_merges_)
    if (const auto it = vocab_.find(mapped); it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  std::vector<int32_t> ids(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) ids[i] = byte_id_[(unsigned char)piece[i]];
  merge_symbols(std::move(ids), out);
}

void HfTokenizer::sentencepiece_bpe(std::string_view segment, std::vector<int32_t>* out) const {
  // The normalizer: "▁" first, every space a "▁"; then one symbol per character, or its bytes'
  // <0xXX> tokens when the character is not in the vocabulary (byte fallback), or <unk>.
  std::string norm = "\xE2\x96\x81";
  for (char c : segment) norm += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < norm.size();) {
    const size_t n = std::max<size_t>(1, utf8_sequence_length(norm, i));
    if (const auto it = vocab_.find(std::string_view(norm).substr(i, n)); it != vocab_.end()) {
      ids.push_back(it->second);
    } else if (byte_fallback_) {
      for (size_t k = 0; k < n; ++k) ids.push_back(byte_id_[(unsigned char)norm[i + k]]);
    } else if (!(fuse_unk_ && !ids.empty() && ids.back() == unk_)) {
      LINGUA_CHECK(unk_ >= 0, "hf tokenizer: ", path_, ": a character is not in the vocabulary and there is no unk_token");
      ids.push_back(unk_);
    }
    i += n;
  }
  merge_symbols(std::move(ids), out);
}

void HfTokenizer::merge_symbols(std::vector<int32_t> id, std::vector<int32_t>* out) const {
  // Symbols as a linked list; a min-heap of (merge rank, position) merges the lowest first,
  // leftmost on ties, skipping entries a merge made stale.
  const int n = (int)id.size();
  std::vector<int> next(n), prev(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) next[i] = i + 1, prev[i] = i - 1;
  using Entry = std::tuple<int32_t, int, int32_t, int32_t>;  // (rank, position, left id, right id)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  auto push = [&](int i) {
    if (i < 0 || next[i] >= n) return;
    const auto it = merges_.find((uint64_t)(uint32_t)id[i] << 32 | (uint32_t)id[next[i]]);
    if (it != merges_.end()) heap.push({it->second.first, i, id[i], id[next[i]]});
  };
  for (int i = 0; i < n; ++i) push(i);
  while (!heap.empty()) {
    const auto [rank, i, a, b] = heap.top();
    heap.pop();
    if (!alive[i] || next[i] >= n || id[i] != a || id[next[i]] != b) continue;  // stale
    const int j = next[i];
    id[i] = merges_.at((uint64_t)(uint32_t)a << 32 | (uint32_t)b).second;
    next[i] = next[j];
    if (next[i] < n) prev[next[i]] = i;
    alive[j] = false;
    push(i);
    push(prev[i]);
  }
  for (int i = 0; i < n; i = next[i]) out->push_back(id[i]);
}

std::vector<int32_t> HfTokenizer::encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                                          std::vector<int32_t>* byte_counts) const {
  std::string fixed;
  text = as_valid_utf8(text, &fixed);
  std::vector<int32_t> ids;
  if (add_bos && bos_ >= 0) ids.push_back(bos_);
  std::vector<size_t> segment_starts;  // (sentencepiece mode: their first token's "▁" is not text)
  auto encode_plain = [&](std::string_view s) {  // a segment between added tokens
    if (s.empty()) return;
    if (sentencepiece_) {
      segment_starts.push_back(ids.size());
      sentencepiece_bpe(s, &ids);
      return;
    }
    std::string with_space;
    if (add_prefix_space_ && s[0] != ' ') {
      with_space = " " + std::string(s);
      s = with_space;
    }
    regex_->split(s, [&](std::string_view piece) { bpe(piece, &ids); });
  };
  size_t plain = 0;
  for (size_t i = 0; i < text.size();) {
    const std::pair<std::string, int32_t>* hit = nullptr;
    if (added_first_[(unsigned char)text[i]])
      for (const auto& a : added_)
        if (text.compare(i, a.first.size(), a.first) == 0) {
          hit = &a;
          break;
        }
    if (!hit) {
      ++i;
      continue;
    }
    encode_plain(text.substr(plain, i - plain));
    ids.push_back(hit->second);
    i += hit->first.size();
    plain = i;
  }
  encode_plain(text.substr(plain));
  if (add_eos && eos_ >= 0) ids.push_back(eos_);
  if (byte_counts) {
    byte_counts->clear();
    for (size_t k = 0; k < ids.size(); ++k) {
      const bool marker = (add_bos && k == 0) || (add_eos && k + 1 == ids.size());
      byte_counts->push_back(marker ? 0 : (int32_t)bytes_[(size_t)ids[k]].size());
    }
    for (size_t k : segment_starts) --(*byte_counts)[k];
  }
  return ids;
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  return encode_with_byte_counts(text, add_bos, add_eos, nullptr);
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) {
    LINGUA_CHECK(id >= 0 && id < n_words(), "hf tokenizer: id ", id, " is outside the vocabulary [0, ", n_words(), ")");
    if (id == bos_ || id == eos_) continue;
    s += bytes_[(size_t)id];
  }
  if (sentencepiece_ && !s.empty() && s[0] == ' ') s.erase(0, 1);  // (the normalizer's first "▁")
  return s;
}

}  // namespace lingua
