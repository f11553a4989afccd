// Fuzz target: the SentencePiece tokenizer (lingua/data/tokenizer.h) with a small BPE model with
// byte fallback, trained by LLVMFuzzerInitialize on a fixed text (seconds; no model file in git).
// Input: text to encode, and the same bytes read as little-endian int32 ids to decode.
// Properties: encode_with_byte_counts gives the same ids with byte counts that partition the text;
// ids are in [0, n_words), BOS/EOS only where asked; decode of encoded ids succeeds and
// gives valid UTF-8; decode of ids in range succeeds, of any other id fails with lingua::Error.
#include <sentencepiece_trainer.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;

namespace {

std::unique_ptr<Tokenizer> g_tok;

std::string training_text() {
  const char* words[] = {"the", "whale", "sea", "ship", "captain", "Ahab", "harpoon", "über", "café", "naïve",
                         "日本語", "テキスト", "데이터", "Ωμέγα", "🙂", "--", "1984", "x=y+1;", "\"quoted\"", "tab\there"};
  const size_t n = sizeof(words) / sizeof(words[0]);
  std::string text;
  uint64_t x = 12345;
  for (int line = 0; line < 400; ++line) {
    for (int w = 0; w < 10; ++w) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      text += (w ? " " : "") + std::string(words[(x >> 33) % n]);
    }
    text += "\n";
  }
  return text;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string corpus = lingua_fuzz::scratch_path("sp_corpus.txt"), prefix = lingua_fuzz::scratch_path("sp");
  lingua_fuzz::write_file(corpus, training_text());
  auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + corpus + " --model_prefix=" + prefix +
      " --vocab_size=400 --model_type=bpe --byte_fallback=true --character_coverage=1.0 --minloglevel=2");
  if (!status.ok()) {
    std::fprintf(stderr, "fuzz: training the SentencePiece model failed: %s\n", status.ToString().c_str());
    std::abort();
  }
  TokenizerConfig tc;
  tc.name = "sp";
  tc.path = prefix + ".model";
  g_tok = make_tokenizer(tc);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tok = *g_tok;
  const int n = tok.n_words();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool bos = size > 0 && (data[0] & 1), eos = size > 0 && (data[0] & 2);

  const std::vector<int32_t> plain = tok.encode(text, false, false);
  const std::vector<int32_t> ids = tok.encode(text, bos, eos);
  FUZZ_CHECK(ids.size() == plain.size() + bos + eos, "BOS/EOS: ", ids.size(), " ids, ", plain.size(), " without");
  if (bos) FUZZ_CHECK(ids.front() == tok.bos_id(), "first id ", ids.front());
  if (eos) FUZZ_CHECK(ids.back() == tok.eos_id(), "last id ", ids.back());
  for (size_t i = 0; i < plain.size(); ++i) {
    FUZZ_CHECK(plain[i] >= 0 && plain[i] < n, "id ", plain[i], " outside [0, ", n, ")");
    FUZZ_CHECK(ids[i + bos] == plain[i], "ids with BOS/EOS differ at ", i);
    FUZZ_CHECK(plain[i] != tok.bos_id() && plain[i] != tok.eos_id(), "text encoded to a BOS/EOS id");
  }
  const std::string decoded = lingua_fuzz::must_succeed("decoding encoded ids", [&] { return tok.decode(ids); });
  FUZZ_CHECK(decoded == tok.decode(plain), "BOS/EOS changed the decoded text");
  FUZZ_CHECK(is_valid_utf8(decoded), "decoded text is not valid UTF-8");
  // No round trip is checked: SentencePiece normalises text (drops control characters and U+FFFD,
  // turns invalid bytes into U+FFFD), so neither decode(encode(x)) == x nor its stability holds.

  // The byte counts (bits per byte): the same ids, 0 for BOS/EOS, >= 0 each, summing to the text's size.
  std::vector<int32_t> counts;
  const std::vector<int32_t> counted = tok.encode_with_byte_counts(text, bos, eos, &counts);
  FUZZ_CHECK(counted == ids, "encode_with_byte_counts gave other ids than encode");
  FUZZ_CHECK(counts.size() == ids.size(), counts.size(), " byte counts for ", ids.size(), " ids");
  int64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    FUZZ_CHECK(counts[i] >= 0, "byte count ", counts[i], " of id ", ids[i]);
    if ((bos && i == 0) || (eos && i + 1 == counts.size())) FUZZ_CHECK(counts[i] == 0, "BOS/EOS count ", counts[i]);
    total += counts[i];
  }
  // (A text the normaliser drops entirely, such as "\x07" or spaces, has no piece to count it.)
  FUZZ_CHECK(total == (plain.empty() ? 0 : static_cast<int64_t>(size)), "byte counts sum to ", total, " for ", size,
             " bytes in ", plain.size(), " pieces");

  std::vector<int32_t> raw(size / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 4);
  bool in_range = true;
  for (int32_t id : raw) in_range &= id >= 0 && id < n;
  try {
    tok.decode(raw);
    FUZZ_CHECK(in_range, "decode accepted an id outside the vocabulary");
  } catch (const Error&) {
    FUZZ_CHECK(!in_range, "decode refused ids of the vocabulary");
  }
  return 0;
}
