#include "lingua/data/tokenizer.h"

#include "lingua/data/hf_tokenizer.h"
#include "lingua/data/tiktoken.h"

#include <sentencepiece_processor.h>

#include <algorithm>

#include "lingua/core/error.h"
#include "lingua/data/paths.h"

namespace lingua {

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> BytesTokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() + 2);
  if (add_bos) ids.push_back(kBos);
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  if (add_eos) ids.push_back(kEos);
  return ids;
}

std::vector<int32_t> BytesTokenizer::encode_with_byte_counts(std::string_view text, bool add_bos, bool add_eos,
                                                             std::vector<int32_t>* byte_counts) const {
  std::vector<int32_t> ids = encode(text, add_bos, add_eos);
  byte_counts->assign(ids.size(), 1);
  if (add_bos) byte_counts->front() = 0;
  if (add_eos) byte_counts->back() = 0;
  return ids;
}

std::string BytesTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    LINGUA_CHECK(id >= 0 && id < kWords, "bytes tokenizer: id ", id, " is outside the vocabulary [0, ", kWords, ")");
    if (id < 256) text.push_back(static_cast<char>(id));
  }
  return text;
}

struct SentencePieceTokenizer::Model {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : model_(std::make_unique<Model>()), path_(model_path) {
  LINGUA_CHECK(!model_path.empty(), "tokenizer sp: no model file given (set tokenizer.path)");
  require_regular_file(model_path, "tokenizer sp: model file");
  auto status = model_->sp.Load(model_path);
  LINGUA_CHECK(status.ok(), "tokenizer sp: cannot load model file ", model_path, ": ", status.ToString());
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int> pieces;
  auto status = model_->sp.Encode(text, &pieces);
  LINGUA_CHECK(status.ok(), "tokenizer sp (", path_, "): encode failed: ", status.ToString());
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 2);
  if (add_bos) {
    LINGUA_CHECK(bos_id() >= 0, "tokenizer sp (", path_, "): add_bos is set but the model has no BOS piece");
    ids.push_back(bos_id());
  }
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_eos) {
    LINGUA_CHECK(eos_id() >= 0, "tokenizer sp (", path_, "): add_eos is set but the model has no EOS piece");
    ids.push_back(eos_id());
  }
  return ids;
}

std::vector<int32_t> SentencePieceTokenizer::encode_with_byte_counts(std::string_view text, bool add_bos,
                                                                    bool add_eos,
                                                                    std::vector<int32_t>* byte_counts) const {
  sentencepiece::ImmutableSentencePieceText spt;
  auto status = model_->sp.Encode(text, spt.mutable_proto());
  LINGUA_CHECK(status.ok(), "tokenizer sp (", path_, "): encode failed: ", status.ToString());
  const size_t n = spt.pieces_size();
  std::vector<int32_t> ids;
  ids.reserve(n + 2);
  byte_counts->clear();
  byte_counts->reserve(n + 2);
  if (add_bos) {
    LINGUA_CHECK(bos_id() >= 0, "tokenizer sp (", path_, "): add_bos is set but the model has no BOS piece");
    ids.push_back(bos_id());
    byte_counts->push_back(0);
  }
  // Piece i covers [start_i, start_{i+1}): the first starts at 0 and the last ends at the text's
  // end, so whitespace the normaliser dropped is still counted. Starts are SentencePiece's offsets
  // made monotone, except that the byte pieces of one character (which all carry the character's
  // offset) take one byte each.
  std::vector<size_t> starts(n);
  for (size_t i = 0; i < n; ++i) {
    size_t s = spt.pieces(i).begin();
    if (i > 0 && model_->sp.IsByte(spt.pieces(i).id()) && model_->sp.IsByte(spt.pieces(i - 1).id()) &&
        s <= starts[i - 1])
      s = starts[i - 1] + 1;
    starts[i] = i == 0 ? 0 : std::clamp(s, starts[i - 1], text.size());
  }
  for (size_t i = 0; i < n; ++i) {
    ids.push_back(static_cast<int32_t>(spt.pieces(i).id()));
    byte_counts->push_back(static_cast<int32_t>((i + 1 < n ? starts[i + 1] : text.size()) - starts[i]));
  }
  if (add_eos) {
    LINGUA_CHECK(eos_id() >= 0, "tokenizer sp (", path_, "): add_eos is set but the model has no EOS piece");
    ids.push_back(eos_id());
    byte_counts->push_back(0);
  }
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> kept;
  kept.reserve(ids.size());
  const int n = n_words();
  for (int32_t id : ids) {
    LINGUA_CHECK(id >= 0 && id < n, "tokenizer sp (", path_, "): id ", id, " is outside the vocabulary [0, ", n, ")");
    if (id != bos_id() && id != eos_id()) kept.push_back(id);
  }
  std::string text;
  auto status = model_->sp.Decode(kept, &text);
  LINGUA_CHECK(status.ok(), "tokenizer sp (", path_, "): decode failed: ", status.ToString());
  return text;
}

int SentencePieceTokenizer::n_words() const { return model_->sp.GetPieceSize(); }
int SentencePieceTokenizer::bos_id() const { return model_->sp.bos_id(); }
int SentencePieceTokenizer::eos_id() const { return model_->sp.eos_id(); }

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config) {
  if (config.name == "bytes") return std::make_unique<BytesTokenizer>();
  if (config.name == "sp") return std::make_unique<SentencePieceTokenizer>(config.path);
  if (config.name == "tiktoken") return std::make_unique<TiktokenTokenizer>(config.path);
  if (config.name == "hf") return std::make_unique<HfTokenizer>(config.path);
  fail("unknown tokenizer name '", config.name, "' (tokenizer.name: bytes, sp, tiktoken or hf)");
}

int32_t single_token_id(const Tokenizer& tok, const std::string& text, const char* key) {
  std::vector<int32_t> ids = tok.encode(text, /*add_bos=*/false, /*add_eos=*/false);
  if (ids.size() != 1) {
    std::string list = "[";
    for (size_t i = 0; i < ids.size(); ++i) list += (i ? ", " : "") + std::to_string(ids[i]);
    fail("config key '", key, "': \"", text, "\" is ", ids.size(), " tokens ", list,
         "], not exactly one (give the text of a single token of the checkpoint's tokenizer)");
  }
  return ids[0];
}

}  // namespace lingua
