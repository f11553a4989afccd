// Tests of Tokenizer::encode_with_byte_counts: the bytes of text each token stands for, which
// bits per byte over a part of a document needs. The counts must partition the text (sum to its
// size) for the bytes tokenizer and for SentencePiece models, whatever the normaliser does.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <numeric>

#include "lingua/core/philox.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/testing.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;
using namespace lingua::test_util;

TEST(TokenByteCounts, BytesTokenizerOneBytePerTokenNoneForBosEos) {
  BytesTokenizer tok;
  std::vector<int32_t> counts;
  const std::string text = "A\xC3\xA9";
  EXPECT_EQ(tok.encode_with_byte_counts(text, true, true, &counts), tok.encode(text, true, true));
  EXPECT_EQ(counts, (std::vector<int32_t>{0, 1, 1, 1, 0}));
  EXPECT_EQ(tok.encode_with_byte_counts(text, false, false, &counts), tok.encode(text, false, false));
  EXPECT_EQ(counts, (std::vector<int32_t>{1, 1, 1}));
  tok.encode_with_byte_counts("", true, false, &counts);
  EXPECT_EQ(counts, (std::vector<int32_t>{0}));
}

namespace {

std::unique_ptr<Tokenizer> train_sentencepiece(const TempDir& dir, bool byte_fallback) {
  const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
                                          "lingua", "model", "token", "data", "train", "loader", "seed"};
  std::string corpus;
  PhiloxStream rng(1, 0);
  for (int line = 0; line < 300; ++line) {
    for (int w = 0; w < 8; ++w) corpus += (w ? " " : "") + words[rng.below(words.size())];
    corpus += "\n";
  }
  const std::string name = byte_fallback ? "sp_bytes" : "sp";
  write_file(dir.path / (name + ".txt"), corpus);
  const std::string prefix = (dir.path / name).string();
  auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir.path / (name + ".txt")).string() + " --model_prefix=" + prefix +
      " --vocab_size=" + (byte_fallback ? "350" : "100") + " --model_type=bpe --character_coverage=1.0" +
      " --minloglevel=2 --byte_fallback=" + (byte_fallback ? "true" : "false"));
  EXPECT_TRUE(status.ok()) << status.ToString();
  TokenizerConfig tc;
  tc.name = "sp";
  tc.path = prefix + ".model";
  return make_tokenizer(tc);
}

}  // namespace

TEST(TokenByteCounts, SentencePieceCountsPartitionTheText) {
  TempDir dir;
  for (bool byte_fallback : {false, true}) {
    auto tok = train_sentencepiece(dir, byte_fallback);
    // Plain words; extra, leading and trailing whitespace (the normaliser drops it); characters
    // the model never saw (unknown pieces, or byte pieces with byte_fallback); a compatibility
    // character NFKC rewrites; nothing at all.
    for (const std::string text :
         {"the quick brown fox", "  the   lazy  dog  ", "\xE6\x97\xA5\xE6\x9C\xAC lingua \xE2\x88\x91 model",
          "\xEF\xAC\x81ne seed", "", "fox\tdog\nthe"}) {
      for (bool bos_eos : {false, true}) {
        std::vector<int32_t> counts;
        auto ids = tok->encode_with_byte_counts(text, bos_eos, bos_eos, &counts);
        EXPECT_EQ(ids, tok->encode(text, bos_eos, bos_eos)) << text;
        ASSERT_EQ(counts.size(), ids.size()) << text;
        for (int32_t c : counts) EXPECT_GE(c, 0) << text;
        EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t{0}), static_cast<int64_t>(text.size()))
            << "byte_fallback " << byte_fallback << ": '" << text << "'";
        if (bos_eos && !ids.empty()) {
          EXPECT_EQ(counts.front(), 0);
          EXPECT_EQ(counts.back(), 0);
        }
      }
    }
    // On text the normaliser keeps as it is, each token's count is its own text: the first k
    // tokens decode to the first (sum of their counts) bytes.
    const std::string text = "the quick brown fox jumps over the lazy dog";
    std::vector<int32_t> counts;
    auto ids = tok->encode_with_byte_counts(text, false, false, &counts);
    ASSERT_GT(ids.size(), 4u);
    size_t prefix = 0;
    for (size_t k = 1; k <= ids.size(); ++k) {
      prefix += counts[k - 1];
      EXPECT_EQ(tok->decode(std::vector<int32_t>(ids.begin(), ids.begin() + k)), text.substr(0, prefix)) << k;
    }
    // Byte pieces: a character the model never saw is three byte tokens of one byte each.
    if (byte_fallback) {
      auto jp = tok->encode_with_byte_counts("\xE6\x97\xA5", false, false, &counts);
      ASSERT_GE(counts.size(), 3u);
      EXPECT_EQ(std::vector<int32_t>(counts.end() - 3, counts.end()), (std::vector<int32_t>{1, 1, 1}));
      EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), 0), 3);  // a "▁" piece before them has none
      EXPECT_EQ(tok->decode(jp), "\xE6\x97\xA5");
    }
  }
}
