// Tests of lingua/data: tokenizers, JSONL reading, the loader pipeline (packing, weights, state,
// async), data-parallel chunk assignment and validation texts (prepare_corpus: test_prepare.cpp).
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/loader.h"
#include "lingua/data/testing.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;
using namespace lingua::test_util;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

DataConfig small_config(const std::string& root, std::map<std::string, double> sources, int seq_len, int batch,
                        int prefetch, bool async) {
  DataConfig c;
  c.root_dir = root;
  c.sources = std::move(sources);
  c.seq_len = seq_len;
  c.batch_size = batch;
  c.prefetch_size = prefetch;
  c.load_async = async;
  c.seed = 7;
  return c;
}

std::vector<Batch> take(DataLoader& loader, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next());
  return out;
}

// The window of row r of a batch: input row plus the last target token.
std::vector<int32_t> window_of(const Batch& b, int r) {
  std::vector<int32_t> w(b.input.begin() + r * b.seq_len, b.input.begin() + (r + 1) * b.seq_len);
  w.push_back(b.target[(r + 1) * b.seq_len - 1]);
  return w;
}

void expect_shifted(const Batch& b) {
  ASSERT_EQ(b.input.size(), size_t(b.batch_size) * b.seq_len);
  ASSERT_EQ(b.target.size(), size_t(b.batch_size) * b.seq_len);
  for (int r = 0; r < b.batch_size; ++r)
    for (int t = 0; t + 1 < b.seq_len; ++t) ASSERT_EQ(b.target[r * b.seq_len + t], b.input[r * b.seq_len + t + 1]);
}

}  // namespace

// ---------------- tokenizers ----------------

TEST(Tokenizer, BytesRoundTripUtf8) {
  BytesTokenizer tok;
  EXPECT_EQ(tok.n_words(), 258);
  EXPECT_EQ(tok.bos_id(), 256);
  EXPECT_EQ(tok.eos_id(), 257);
  EXPECT_EQ(tok.encode("A\xC3\xA9", true, true), (std::vector<int32_t>{256, 65, 0xC3, 0xA9, 257}));
  EXPECT_EQ(tok.encode("", false, false), std::vector<int32_t>{});
  const std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x99\x82\n\ttab";
  for (bool bos : {false, true})
    for (bool eos : {false, true}) {
      auto ids = tok.encode(text, bos, eos);
      EXPECT_EQ(ids.size(), text.size() + bos + eos);
      EXPECT_EQ(tok.decode(ids), text);
    }
  const std::string binary("\x00\xff\xfe", 3);  // not UTF-8: still round-trips
  EXPECT_EQ(tok.decode(tok.encode(binary, true, false)), binary);
  EXPECT_NE(error_of([&] { tok.decode({300}); }).find("300"), std::string::npos);
}

TEST(Tokenizer, SentencePieceTrainedInTest) {
  TempDir dir;
  const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
                                          "lingua", "model", "token", "data", "train", "loader", "seed"};
  std::string corpus;
  PhiloxStream rng(1, 0);
  for (int line = 0; line < 300; ++line) {
    for (int w = 0; w < 8; ++w) corpus += (w ? " " : "") + words[rng.below(words.size())];
    corpus += "\n";
  }
  write_file(dir.path / "corpus.txt", corpus);
  const std::string prefix = (dir.path / "sp").string();
  auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir.path / "corpus.txt").string() + " --model_prefix=" + prefix +
      " --vocab_size=100 --model_type=bpe --character_coverage=1.0 --minloglevel=2");
  ASSERT_TRUE(status.ok()) << status.ToString();

  TokenizerConfig tc;
  tc.name = "sp";
  tc.path = prefix + ".model";
  auto tok = make_tokenizer(tc);
  EXPECT_EQ(tok->n_words(), 100);
  EXPECT_EQ(tok->bos_id(), 1);  // SentencePiece defaults: unk 0, bos 1, eos 2
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_LT(tok->encode("the quick brown fox", false, false).size(), 10u);  // merges happened (19 bytes)
  for (const std::string text : {"the quick brown fox jumps over the lazy dog", "lingua data loader", "seed"}) {
    auto plain = tok->encode(text, false, false);
    auto ids = tok->encode(text, true, true);
    ASSERT_EQ(ids.size(), plain.size() + 2);
    EXPECT_EQ(ids.front(), 1);
    EXPECT_EQ(ids.back(), 2);
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), ids.begin() + 1));
    for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < 100);
    EXPECT_EQ(tok->decode(ids), text);
  }
}

TEST(Tokenizer, FactoryErrors) {
  TokenizerConfig tc;
  EXPECT_EQ(make_tokenizer(tc)->n_words(), 258);  // default: bytes
  tc.name = "wordpiece";
  EXPECT_NE(error_of([&] { make_tokenizer(tc); }).find("'wordpiece'"), std::string::npos);
  tc.name = "sp";
  tc.path = "/nonexistent/lingua/tok.model";
  EXPECT_NE(error_of([&] { make_tokenizer(tc); }).find("/nonexistent/lingua/tok.model"), std::string::npos);
  tc.path = "";
  EXPECT_NE(error_of([&] { make_tokenizer(tc); }).find("tokenizer.path"), std::string::npos);
  TempDir dir;
  write_file(dir.path / "garbage.model", "not a model");
  tc.path = (dir.path / "garbage.model").string();
  EXPECT_NE(error_of([&] { make_tokenizer(tc); }).find(tc.path), std::string::npos);
}

// ---------------- JSONL lines ----------------

TEST(Jsonl, LineKinds) {
  std::string text;
  EXPECT_EQ(parse_document_line(R"({"text": "a\u00e9b"})", &text), LineKind::document);
  EXPECT_EQ(text, "a\xC3\xA9" "b");
  EXPECT_EQ(parse_document_line(R"({"content": "c", "id": 3})", &text), LineKind::document);
  EXPECT_EQ(text, "c");
  EXPECT_EQ(parse_document_line(R"({"text": null, "content": "d"})", &text), LineKind::document);
  EXPECT_EQ(text, "d");
  EXPECT_EQ(parse_document_line(R"({"text": ""})", &text), LineKind::document);
  EXPECT_EQ(text, "");
  EXPECT_EQ(parse_document_line("   \r", &text), LineKind::blank);
  EXPECT_EQ(parse_document_line("", &text), LineKind::blank);
  EXPECT_EQ(parse_document_line(R"({"text": "x")", &text), LineKind::bad_json);
  EXPECT_EQ(parse_document_line(R"({"text": "x"} trailing)", &text), LineKind::bad_json);
  EXPECT_EQ(parse_document_line(R"({"body": "x"})", &text), LineKind::missing_text);
  EXPECT_EQ(parse_document_line(R"({"text": 3})", &text), LineKind::missing_text);
  EXPECT_EQ(parse_document_line(R"(["text", "x"])", &text), LineKind::missing_text);
  EXPECT_EQ(parse_document_line("{\"text\": \"a\xff" "b\"}", &text), LineKind::invalid_utf8);
  EXPECT_EQ(parse_document_line("{\"text\": \"\xC0\xAF\"}", &text), LineKind::invalid_utf8);  // overlong '/'
  EXPECT_NE(parse_document_line(R"({"text": "\ud800"})", &text), LineKind::document);  // lone surrogate escape
}

TEST(Jsonl, Utf8Validation) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("plain \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x99\x82 \xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(is_valid_utf8("\x80"));                 // stray continuation
  EXPECT_FALSE(is_valid_utf8("\xC3"));                 // truncated
  EXPECT_FALSE(is_valid_utf8("\xC1\xBF"));             // overlong
  EXPECT_FALSE(is_valid_utf8("\xE0\x80\xAF"));         // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));         // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));     // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xF5\x80\x80\x80"));
  std::string s = "a\xff" "b\xC3";
  EXPECT_EQ(sanitize_utf8(&s), 2);
  EXPECT_EQ(s, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(utf8_length("h\xC3\xA9\xF0\x9F\x99\x82"), 3);
}

// ---------------- loader: packing ----------------

namespace {
// Writes one source whose chunks hold the given documents; returns the expected token stream
// of one epoch (bytes tokenizer).
std::vector<int32_t> write_source(const fs::path& dir, const std::string& name,
                                  const std::vector<std::vector<std::string>>& chunks, bool bos, bool eos) {
  std::vector<int32_t> stream;
  BytesTokenizer tok;
  for (size_t c = 0; c < chunks.size(); ++c) {
    write_file(dir / name / (name + ".chunk." + std::to_string(c) + ".jsonl"), jsonl_of(chunks[c]));
    for (const auto& d : chunks[c]) {
      auto ids = tok.encode(d, bos, eos);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
  }
  return stream;
}
}  // namespace

TEST(Loader, PacksWindowsAcrossDocuments) {
  TempDir root;
  const std::vector<std::vector<std::string>> chunks = {{"hello", "a", "", "w\xC3\xB6rld"}, {"xyz", "0123456789"}};
  const auto epoch = write_source(root.path, "s", chunks, true, true);
  BytesTokenizer tok;
  for (bool async : {false, true}) {
    const int T = 7, W = T + 1;
    DataLoader loader(small_config(root.str(), {{"s", 1.0}}, T, 1, 1, async), tok);  // no shuffling
    for (int k = 0; k < 20; ++k) {
      Batch b = loader.next();
      ASSERT_EQ(b.batch_size, 1);
      ASSERT_EQ(b.seq_len, T);
      expect_shifted(b);
      std::vector<int32_t> want;
      for (int i = 0; i < W; ++i) want.push_back(epoch[(size_t(k) * W + i) % epoch.size()]);
      EXPECT_EQ(window_of(b, 0), want) << "window " << k << " async " << async;
    }
  }
  // Batches of 3 out of a shuffle buffer of 2 batches: each fill holds the next 6 windows, permuted.
  const int T = 5, W = T + 1;
  DataLoader loader(small_config(root.str(), {{"s", 1.0}}, T, 3, 2, false), tok);
  bool permuted = false;
  for (int fill = 0; fill < 5; ++fill) {
    std::vector<std::vector<int32_t>> got, want;
    for (int b = 0; b < 2; ++b) {
      Batch batch = loader.next();
      expect_shifted(batch);
      for (int r = 0; r < 3; ++r) got.push_back(window_of(batch, r));
    }
    for (int w = 0; w < 6; ++w) {
      std::vector<int32_t> win;
      for (int i = 0; i < W; ++i) win.push_back(epoch[(size_t(fill * 6 + w) * W + i) % epoch.size()]);
      want.push_back(win);
    }
    permuted |= got != want;
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << "fill " << fill;
  }
  EXPECT_TRUE(permuted);
}

TEST(Loader, BosEosFlags) {
  TempDir root;
  const auto epoch = write_source(root.path, "s", {{"ab", "cde"}}, false, true);
  BytesTokenizer tok;
  auto cfg = small_config(root.str(), {{"s", 1.0}}, 3, 1, 1, false);
  cfg.add_bos = false;
  DataLoader loader(cfg, tok);
  std::vector<int32_t> got;
  for (int k = 0; k < 3; ++k) {
    auto w = window_of(loader.next(), 0);
    got.insert(got.end(), w.begin(), w.end());
  }
  EXPECT_EQ(got, (std::vector<int32_t>{'a', 'b', 257, 'c', 'd', 'e', 257, 'a', 'b', 257, 'c', 'd'}));
  EXPECT_EQ(std::vector<int32_t>(got.begin(), got.begin() + 7), epoch);
}

TEST(Loader, SourceWeightsRespected) {
  TempDir root;
  write_source(root.path, "a", {{std::string(50, 'a'), std::string(13, 'a')}}, false, false);
  write_source(root.path, "b", {{std::string(31, 'b')}}, false, false);
  BytesTokenizer tok;
  auto cfg = small_config(root.str(), {{"a", 0.8}, {"b", 0.2}}, 8, 8, 4, false);
  cfg.add_bos = cfg.add_eos = false;
  DataLoader loader(cfg, tok);
  int64_t na = 0, n = 0;
  for (int k = 0; k < 400; ++k) {
    Batch b = loader.next();
    for (int r = 0; r < b.batch_size; ++r) {
      auto w = window_of(b, r);
      ASSERT_TRUE(std::all_of(w.begin(), w.end(), [&](int32_t t) { return t == w[0]; }));  // one source per window
      na += w[0] == 'a';
      ++n;
    }
  }
  const double frac = double(na) / n;  // n = 3200: std 0.007
  EXPECT_NEAR(frac, 0.8, 0.03);
}

// ---------------- loader: state ----------------

namespace {
void write_mixed_corpus(const fs::path& root) {
  auto docs = [](char c, int n, int salt) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) out.push_back(std::string(size_t((i * 7 + salt) % 23 + 1), char(c + i % 5)));
    return out;
  };
  write_source(root, "a", {docs('a', 9, 1), docs('f', 4, 2), docs('k', 7, 3)}, true, true);
  write_source(root, "b", {docs('p', 5, 4), docs('u', 6, 5)}, true, true);
}
}  // namespace

TEST(Loader, StateRoundTripSyncAndAsync) {
  TempDir root;
  write_mixed_corpus(root.path);
  BytesTokenizer tok;
  auto cfg = [&](bool async) { return small_config(root.str(), {{"a", 0.6}, {"b", 0.4}}, 16, 3, 4, async); };
  const int total = 30;
  std::vector<Batch> ref;
  {
    DataLoader sync(cfg(false), tok);
    ref = take(sync, total);
    DataLoader async(cfg(true), tok);
    EXPECT_EQ(take(async, total), ref);  // the background thread gives the same batches
  }
  for (int n : {0, 1, 3, 4, 5, 11}) {
    for (bool save_async : {false, true}) {
      DataLoader a(cfg(save_async), tok);
      ASSERT_EQ(take(a, n), std::vector<Batch>(ref.begin(), ref.begin() + n));
      const json saved = json::parse(a.state().dump());  // survives a dump/parse round trip
      EXPECT_EQ(saved, a.state());
      const int m = 12;
      ASSERT_EQ(take(a, m), std::vector<Batch>(ref.begin() + n, ref.begin() + n + m));
      for (bool load_async : {false, true}) {
        DataLoader b(cfg(load_async), tok);
        b.load_state(saved);
        EXPECT_EQ(take(b, m), std::vector<Batch>(ref.begin() + n, ref.begin() + n + m))
            << "n " << n << " save_async " << save_async << " load_async " << load_async;
        EXPECT_EQ(b.stats(), a.stats());
        EXPECT_EQ(b.state(), a.state());
      }
    }
  }
  // Loading into a loader that has already run ahead on its thread.
  DataLoader a(cfg(true), tok);
  take(a, 3);
  const json at3 = a.state();
  take(a, 8);
  a.load_state(at3);
  EXPECT_EQ(take(a, 10), std::vector<Batch>(ref.begin() + 3, ref.begin() + 13));
}

TEST(Loader, StateFromAnotherConfigFails) {
  TempDir root;
  write_mixed_corpus(root.path);
  BytesTokenizer tok;
  auto cfg = small_config(root.str(), {{"a", 0.6}, {"b", 0.4}}, 16, 3, 4, false);
  DataLoader a(cfg, tok);
  take(a, 2);
  const json s = a.state();
  auto other = cfg;
  other.seq_len = 17;
  DataLoader b(other, tok);
  EXPECT_NE(error_of([&] { b.load_state(s); }).find("seq_len"), std::string::npos);
  DataLoader c(cfg, tok, 1, 2);
  EXPECT_NE(error_of([&] { c.load_state(s); }).find("rank"), std::string::npos);
  DataLoader d(cfg, tok);
  EXPECT_NE(error_of([&] { d.load_state(json{{"version", 1}}); }).find("data loader state"), std::string::npos);
  d.next();  // a state that failed to parse leaves the loader usable
}

// Found by fuzz/fuzz_train_state: the values of a state read back from a checkpoint are checked. A
// token id outside the vocabulary went into batches as it was; a float where an integer belongs
// (1e300) was converted to an integer it does not fit (undefined behaviour); a counter at the
// int64 limit overflowed on the next increment.
TEST(Loader, StateValuesAreChecked) {
  TempDir root;
  write_mixed_corpus(root.path);
  BytesTokenizer tok;
  const auto cfg = small_config(root.str(), {{"a", 0.6}, {"b", 0.4}}, 16, 3, 4, false);
  DataLoader a(cfg, tok);
  take(a, 5);
  const json saved = a.state();
  struct Case {
    const char* pointer;
    json value;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"/fill_start/sources/a/tokens", {1, 258}, "token id 258"},
      {"/fill_start/sources/a/tokens", {1, -1}, "'tokens'"},
      {"/fill_start/sources/a/tokens", {1e300}, "'tokens'"},
      {"/fill_start/sources/a/tokens", "abc", "'tokens'"},
      {"/fill_start/sources/a/reader/epoch", 1e300, "'epoch'"},
      {"/fill_start/sources/a/reader/line", INT64_MAX, "'line'"},
      {"/fill_start/sources/b/reader/offset", -5, "'offset'"},
      {"/fill_start/stats/documents", "3", "'documents'"},
      {"/fill_start/stats/skipped/bad_json", 2.5, "'bad_json'"},
      {"/fill_start/source_rng/stream", 4294967296ull, "'stream'"},
      {"/fill_start/shuffle_rng/counter", -1, "'counter'"},
      {"/fill_start/sources", json::array({1}), "'sources'"},
      {"/next_batch", 1e300, "'next_batch'"},
      {"/version", 1.5, "'version'"},
  };
  DataLoader b(cfg, tok);
  for (const Case& c : cases) {
    json bad = saved;
    bad[json::json_pointer(c.pointer)] = c.value;
    const std::string e = error_of([&] { b.load_state(bad); });
    EXPECT_NE(e.find(c.expected), std::string::npos) << c.pointer << " = " << c.value.dump() << ": " << e;
    EXPECT_NE(e.find("data loader state"), std::string::npos) << e;
  }
  b.load_state(saved);  // usable after the failures
  EXPECT_EQ(take(b, 3), take(a, 3));
}

// ---------------- loader: malformed lines, errors ----------------

TEST(Loader, MalformedLinesSkippedAndCounted) {
  TempDir root;
  const std::string lines = std::string("{bad json\n") +   //
                            "{\"text\": \"abcd\"}\n" +      //
                            "{\"foo\": 1}\n" +              // missing text
                            "{\"content\": \"efgh\"}\n" +   //
                            "{\"text\": \"a\xff" "b\"}\n" +  // invalid UTF-8
                            "[1, 2]\n" +                    // missing text
                            "{\"text\": 5}\n" +             // missing text
                            "\n" +                          // blank: ignored
                            "{\"text\": \"ijkl\"}";         // no final newline
  write_file(root.path / "s" / "s.chunk.00.jsonl", lines);
  BytesTokenizer tok;
  for (bool async : {false, true}) {
    // seq_len 5: one window is exactly one document (4 bytes + BOS + EOS).
    DataLoader loader(small_config(root.str(), {{"s", 1.0}}, 5, 1, 1, async), tok);
    EXPECT_EQ(loader.stats(), DataStats{});
    std::string docs;
    for (int k = 0; k < 3; ++k) docs += tok.decode(window_of(loader.next(), 0));
    EXPECT_EQ(docs, "abcdefghijkl");
    DataStats s = loader.stats();
    EXPECT_EQ(s.documents, 3);
    EXPECT_EQ(s.tokens, 18);
    EXPECT_EQ(s.bad_json, 1);
    EXPECT_EQ(s.missing_text, 3);
    EXPECT_EQ(s.invalid_utf8, 1);
    EXPECT_EQ(s.skipped(), 5);
    take(loader, 3);  // second epoch
    s = loader.stats();
    EXPECT_EQ(s.documents, 6);
    EXPECT_EQ(s.bad_json, 2);
    EXPECT_EQ(s.missing_text, 6);
    EXPECT_EQ(s.invalid_utf8, 2);
    EXPECT_EQ(DataStats::from_json(s.to_json()), s);
  }
}

TEST(Loader, ConfigAndLayoutErrorsNameThePath) {
  TempDir root;
  write_source(root.path, "good", {{"text"}}, true, true);
  fs::create_directories(root.path / "empty");
  write_file(root.path / "valonly" / "valonly.val.jsonl", jsonl_of({"v"}));
  BytesTokenizer tok;
  auto cfg = small_config(root.str(), {{"good", 1.0}}, 4, 1, 1, false);
  auto msg = [&](DataConfig c) { return error_of([&] { DataLoader l(c, tok); }); };
  EXPECT_EQ(msg(cfg), "");

  auto c = cfg;
  c.root_dir = "";
  EXPECT_NE(msg(c).find("data.root_dir"), std::string::npos);
  c.root_dir = (root.path / "nope").string();
  EXPECT_NE(msg(c).find(c.root_dir), std::string::npos);
  c = cfg;
  c.sources = {};
  EXPECT_NE(msg(c).find("data.sources"), std::string::npos);
  c.sources = {{"good", 1.0}, {"missing", 1.0}};
  EXPECT_NE(msg(c).find((root.path / "missing").string()), std::string::npos);
  EXPECT_NE(msg(c).find("data.sources.missing"), std::string::npos);
  c.sources = {{"empty", 1.0}};
  EXPECT_NE(msg(c).find((root.path / "empty").string()), std::string::npos);
  EXPECT_NE(msg(c).find("*.chunk.*.jsonl"), std::string::npos);
  c.sources = {{"valonly", 1.0}};
  EXPECT_NE(msg(c).find("valonly"), std::string::npos);
  for (double w : {0.0, -1.0, std::nan("")}) {
    c.sources = {{"good", w}};
    EXPECT_NE(msg(c).find("data.sources.good"), std::string::npos) << w;
  }
  c = cfg;
  c.n_views = 3;
  EXPECT_NE(msg(c).find("n_views"), std::string::npos);
  c = cfg;
  c.seq_len = 0;
  EXPECT_NE(msg(c).find("seq_len"), std::string::npos);
  EXPECT_NE(error_of([&] { DataLoader l(cfg, tok, 2, 2); }).find("rank"), std::string::npos);
}

TEST(Loader, FileWhereDirectoryExpectedAndTheReverse) {
  TempDir root;
  write_source(root.path, "good", {{"text"}}, true, true);
  write_file(root.path / "plain_file", "x");
  fs::create_directories(root.path / "odd" / "odd.chunk.00.jsonl");  // a directory named like a chunk
  write_file(root.path / "odd" / "odd.chunk.01.jsonl", jsonl_of({"t"}));
  BytesTokenizer tok;
  auto msg = [&](DataConfig c) { return error_of([&] { DataLoader l(c, tok); }); };
  auto c = small_config((root.path / "plain_file").string(), {{"good", 1.0}}, 4, 1, 1, false);
  EXPECT_NE(msg(c).find("data.root_dir " + c.root_dir + " is a file, expected a directory"), std::string::npos)
      << msg(c);
  c = small_config(root.str(), {{"plain_file", 1.0}}, 4, 1, 1, false);
  EXPECT_NE(msg(c).find((root.path / "plain_file").string() + " is a file, expected a directory"), std::string::npos)
      << msg(c);
  EXPECT_NE(msg(c).find("data.sources.plain_file"), std::string::npos) << msg(c);
  c = small_config(root.str(), {{"odd", 1.0}}, 4, 1, 1, false);
  EXPECT_NE(msg(c).find((root.path / "odd" / "odd.chunk.00.jsonl").string() + " is a directory, expected a file"),
            std::string::npos)
      << msg(c);
  TokenizerConfig tc;
  tc.name = "sp";
  tc.path = root.str();
  EXPECT_NE(error_of([&] { make_tokenizer(tc); }).find(root.str() + " is a directory, expected a file"),
            std::string::npos);
}

TEST(Loader, PipelineErrorReachesNext) {
  TempDir root;
  write_file(root.path / "broken" / "broken.chunk.00.jsonl", "{nope\n{\"id\": 1}\n");
  BytesTokenizer tok;
  for (bool async : {false, true}) {
    DataLoader loader(small_config(root.str(), {{"broken", 1.0}}, 4, 2, 2, async), tok);
    EXPECT_NE(error_of([&] { loader.next(); }).find("'broken'"), std::string::npos) << async;
    EXPECT_NE(error_of([&] { loader.next(); }).find("'broken'"), std::string::npos) << async;  // sticky
  }
}

TEST(Loader, DestructorStopsBusyThread) {
  TempDir root;
  write_mixed_corpus(root.path);
  BytesTokenizer tok;
  for (int i = 0; i < 5; ++i) {
    DataLoader loader(small_config(root.str(), {{"a", 1}, {"b", 1}}, 64, 8, 64, true), tok);
    loader.next();  // the thread is now filling ahead; the destructor must not hang
  }
}

// ---------------- data parallelism ----------------

TEST(Loader, AssignChunksCoversEveryLineOnce) {
  for (int n_chunks = 1; n_chunks <= 7; ++n_chunks)
    for (int world = 1; world <= 9; ++world) {
      std::vector<std::string> files;
      for (int c = 0; c < n_chunks; ++c) files.push_back(std::string(1, char('A' + c)));
      std::map<std::pair<std::string, int>, int> readers;  // (chunk, line) -> ranks reading it
      size_t most = 0, least = SIZE_MAX;
      for (int r = 0; r < world; ++r) {
        auto a = assign_chunks(files, r, world);
        most = std::max(most, a.size());
        least = std::min(least, a.size());
        for (const auto& f : a)
          for (int line = 0; line < 40; ++line) readers[{f.path, line}] += line % f.line_stride == f.line_offset;
      }
      EXPECT_LE(most - least, 1u);
      for (const auto& f : files)
        for (int line = 0; line < 40; ++line)
          EXPECT_EQ((readers[{f, line}]), 1) << f << ":" << line << " chunks " << n_chunks << " world " << world;
    }
}

TEST(Loader, EveryChunkReadAcrossRanks) {
  // Each document fills exactly one window, so a rank's batches list the documents it reads; a
  // rank's epoch ends where its first document comes back.
  for (auto [n_chunks, world] : {std::pair{3, 5}, {5, 2}, {4, 2}, {2, 2}}) {
    TempDir root;
    std::set<std::string> all;
    std::vector<std::vector<std::string>> chunks(n_chunks);
    for (int c = 0; c < n_chunks; ++c)
      for (int i = 0; i < 6; ++i) {
        const std::string text = {'c', char('0' + c), 'l', '0', char('0' + i)};  // 5 bytes
        chunks[c].push_back(text);
        all.insert(text);
      }
    write_source(root.path, "s", chunks, true, true);
    BytesTokenizer tok;
    std::set<std::string> seen;
    size_t total = 0;
    for (int rank = 0; rank < world; ++rank) {
      DataLoader loader(small_config(root.str(), {{"s", 1.0}}, 6, 1, 1, rank % 2), tok, rank, world);
      std::vector<std::string> epoch;
      for (int k = 0; k < 50; ++k) {
        std::string doc = tok.decode(window_of(loader.next(), 0));
        if (!epoch.empty() && doc == epoch.front()) break;
        epoch.push_back(doc);
      }
      total += epoch.size();
      seen.insert(epoch.begin(), epoch.end());
    }
    EXPECT_EQ(seen, all) << n_chunks << " chunks, " << world << " ranks";
    EXPECT_EQ(total, all.size()) << "a line read by two ranks";
  }
}

// ---------------- validation texts ----------------

TEST(Validation, ReadsValFilesAndCountsMalformed) {
  TempDir root;
  write_file(root.path / "s" / "s.chunk.00.jsonl", jsonl_of({"train"}));
  write_file(root.path / "s" / "a.val.jsonl", jsonl_of({"v1", "v2"}) + "{broken\n{\"x\": 1}\n");
  write_file(root.path / "s" / "b.val.jsonl", "{\"content\": \"v3\"}\n{\"text\": \"\xfe\"}\n");
  DataStats stats;
  auto texts = read_validation_texts((root.path / "s").string(), 0, &stats);
  EXPECT_EQ(texts, (std::vector<std::string>{"v1", "v2", "v3"}));
  EXPECT_EQ(stats.documents, 3);
  EXPECT_EQ(stats.bad_json, 1);
  EXPECT_EQ(stats.missing_text, 1);
  EXPECT_EQ(stats.invalid_utf8, 1);
  EXPECT_EQ(read_validation_texts((root.path / "s").string(), 2, nullptr), (std::vector<std::string>{"v1", "v2"}));
  EXPECT_NE(error_of([&] { read_validation_texts((root.path / "t").string(), 0, nullptr); })
                .find((root.path / "t").string()),
            std::string::npos);
  fs::create_directories(root.path / "noval");
  EXPECT_NE(error_of([&] { read_validation_texts((root.path / "noval").string(), 0, nullptr); }).find("*.val.jsonl"),
            std::string::npos);
}
