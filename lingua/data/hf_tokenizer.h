#pragma once
// Hugging Face tokenizer.json (data.tokenizer.name: hf): byte-level BPE as Llama 3 and GPT-2 ship
// it, and SentencePiece-style BPE as Llama 2 and Mistral do. Byte-level:
//  - added tokens (special or not) found in the text are split out first, longest first, and
//    become their own ids (as the original does; a special token's name in a document IS special);
//  - the rest is pre-tokenised by the Split regex of a Sequence [Split (Isolated), ByteLevel] or by
//    ByteLevel's own GPT-2 regex (use_regex), with its add_prefix_space;
//  - each piece's bytes are mapped to GPT-2's byte characters, looked up whole when
//    model.ignore_merges, else merged pair by pair in model.merges order (lowest first, leftmost
//    on ties);
//  - BOS / EOS: the added token <|begin_of_text|>, <s> or <|endoftext|> / <|end_of_text|>, </s> or
//    <|endoftext|> (-1 when there is none); n_words: the largest id + 1.
// SentencePiece-style (normalizer Sequence [Prepend "▁", Replace " " -> "▁"], no pre-tokenizer):
// each segment between added tokens gets "▁" first and its spaces as "▁", its characters are the
// symbols (a character not in the vocabulary: its bytes' <0xXX> tokens with byte_fallback, else
// <unk>, fused), merged in model.merges order; decoding turns "▁" into spaces and drops the first.
// Other normalizers and pre-tokenizers, and models other than BPE, are refused with an error
// naming the field. Invalid UTF-8 is encoded as its U+FFFD replacement.
#include <memory>
#include <string>
#include <unordered_map>

#include "lingua/data/regex_split.h"
#include "lingua/data/tokenizer.h"

namespace lingua {

// GPT-2's printable character (UTF-8) standing for byte b in byte-level BPE vocabularies.
std::string gpt2_byte_char(int b);

class HfTokenizer final : public Tokenizer {
 public:
  explicit HfTokenizer(const std::string& path);  // fails naming the path and the field
  ~HfTokenizer() override;
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::vector<int32_t> encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                               std::vector<int32_t>* byte_counts) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int n_words() const override { return (int)bytes_.size(); }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  void bpe(std::string_view piece, std::vector<int32_t>* out) const;  // raw bytes of one piece
  void sentencepiece_bpe(std::string_view segment, std::vector<int32_t>* out) const;
  void merge_symbols(std::vector<int32_t> ids, std::vector<int32_t>* out) const;
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> vocab_;  // byte-level strings
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;     // (a, b) -> (rank, merged id)
  std::vector<std::pair<std::string, int32_t>> added_;                     // longest first
  bool added_first_[256] = {};                                             // first bytes of added tokens
  std::vector<std::string> bytes_;                                         // id -> raw bytes
  int32_t byte_id_[256];                                                   // the id of each single byte
  std::string byte_char_[256];                                             // GPT-2's character of each byte
  bool ignore_merges_ = false, add_prefix_space_ = false;
  bool sentencepiece_ = false, byte_fallback_ = false, fuse_unk_ = false;
  int32_t unk_ = -1;
  int bos_ = -1, eos_ = -1;
  std::unique_ptr<RegexSplitter> regex_;
  std::string path_;
};

}  // namespace lingua
