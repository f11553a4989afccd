#pragma once
// Tokenizers: text <-> token ids. The data loader, validation and generation see only the abstract
// Tokenizer, so another kind (tiktoken, HF tokenizer.json) is one more subclass and one more name
// in make_tokenizer.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

// Implementations must allow concurrent const calls: the asynchronous data loader encodes on its
// own thread while the trainer may decode or evaluate on another.
class Tokenizer {
 public:
  virtual ~Tokenizer();
  // The ids of text, preceded by bos_id() / followed by eos_id() when asked.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const = 0;
  // encode(), plus how many bytes of `text` each id stands for: (*byte_counts)[i] for ids[i], 0 for
  // BOS and EOS. The counts partition the text in order (they sum to text.size()), so the bytes
  // of any run of tokens are known: bits per byte over the tokens actually scored. Exception: a
  // text that gives no token besides BOS/EOS (SentencePiece drops text of only spaces or control
  // characters) has no token to count its bytes, which are then not counted.
  virtual std::vector<int32_t> encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                                       std::vector<int32_t>* byte_counts) const = 0;
  // The text of ids; BOS and EOS ids are skipped. Fails on an id outside [0, n_words()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int n_words() const = 0;  // vocabulary size: ids are in [0, n_words())
  virtual int bos_id() const = 0;   // -1 when the vocabulary has none
  virtual int eos_id() const = 0;   // -1 when the vocabulary has none
};

// Byte-level: bytes 0..255 are ids 0..255, BOS = 256, EOS = 257 (vocabulary 258). Any byte
// string round-trips, valid UTF-8 or not.
class BytesTokenizer final : public Tokenizer {
 public:
  static constexpr int kBos = 256, kEos = 257, kWords = 258;
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::vector<int32_t> encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                               std::vector<int32_t>* byte_counts) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int n_words() const override { return kWords; }
  int bos_id() const override { return kBos; }
  int eos_id() const override { return kEos; }
};

// SentencePiece model file (libsentencepiece); vocabulary, BOS and EOS come from the model.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& model_path);  // fails naming the path
  ~SentencePieceTokenizer() override;
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  // Byte counts from each piece's offset in the original text (SentencePiece's own alignment, so
  // normalisation, whitespace and byte-fallback pieces are accounted for): a piece covers the bytes
  // from its start up to the next piece's start.
  std::vector<int32_t> encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                               std::vector<int32_t>* byte_counts) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int n_words() const override;
  int bos_id() const override;
  int eos_id() const override;

 private:
  struct Model;  // keeps sentencepiece headers out of this one
  std::unique_ptr<Model> model_;
  std::string path_;
};

// The tokenizer named by config.name ("bytes", or "sp" / "tiktoken" with config.path); fails with the name or
// path on an unknown name or a missing / unreadable model file.
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config);

// The id of `text` when it encodes to exactly one token (without BOS/EOS); otherwise an error naming
// the config key, the text and the ids it encoded to.
int32_t single_token_id(const Tokenizer& tok, const std::string& text, const char* key);

}  // namespace lingua
