#pragma once
// tiktoken BPE as Lingua defines it (data.tokenizer.name: tiktoken), SPEC §1:
//  - ranks: a tiktoken file (one "<base64 bytes> <rank>" per line: Llama 3's tokenizer.model,
//    cl100k_base.tiktoken) or the JSON form the npm package `tiktoken` ships
//    (encoders/<name>.json: pat_str, special_tokens, bpe_ranks);
//  - pre-tokenizer: Llama 3's regex (the JSON form: its own pat_str), through PCRE2 with Unicode
//    properties; each piece is one token when it is a rank, else merged by byte-pair ranks (the
//    adjacent pair whose merge has the lowest rank first, leftmost on ties);
//  - 256 special ids after the BPE ids: <|begin_of_text|> (BOS) = n, <|end_of_text|> (EOS) = n + 1,
//    then Lingua's fim tokens and <|reserved_special_token_k|>; n_words = n + 256. Text is encoded
//    as ordinary text (a special token's name in a document is just text);
//  - text is encoded in slices of 400,000 characters, as Lingua does;
//  - invalid UTF-8 is first replaced by U+FFFD (as Python's errors="replace" would make it); the
//    byte counts then refer to the replaced text.
#include <memory>
#include <string>
#include <unordered_map>

#include "lingua/data/regex_split.h"
#include "lingua/data/tokenizer.h"

namespace lingua {

class TiktokenTokenizer final : public Tokenizer {
 public:
  explicit TiktokenTokenizer(const std::string& path);  // fails naming the path (and line)
  ~TiktokenTokenizer() override;
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::vector<int32_t> encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                               std::vector<int32_t>* byte_counts) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int n_words() const override { return n_ranks_ + kSpecial; }
  int bos_id() const override { return n_ranks_; }
  int eos_id() const override { return n_ranks_ + 1; }
  static constexpr int kSpecial = 256;
  static const char* llama3_pattern();

  // What a conversion to another format needs (hf_tokenizer_export.h): the BPE ids [0, n_ranks()),
  // their bytes, the rank of some bytes (-1 when they are no token), the names of the special ids
  // n_ranks() + k, and the pre-tokenizer regex.
  int n_ranks() const { return n_ranks_; }
  const std::string& token_bytes(int id) const { return bytes_.at((size_t)id); }
  int32_t rank_of(std::string_view bytes) const;
  const std::vector<std::string>& special_names() const { return special_names_; }
  const std::string& pattern() const { return pattern_; }

 private:
  void bpe(std::string_view piece, std::vector<int32_t>* out) const;
  struct Hash {  // (heterogeneous: look string_views up without a copy)
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> ranks_;
  std::vector<std::string> bytes_;  // id -> bytes
  std::vector<std::string> special_names_;
  std::string pattern_;
  int n_ranks_ = 0;
  std::unique_ptr<RegexSplitter> regex_;
  std::string path_;
};

}  // namespace lingua
