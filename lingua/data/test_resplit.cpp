// Tests of resplit_loader_states (lingua/data/resplit.h): loader states of N simulated ranks,
// re-split over M, continued. Each document fills exactly one window (8 bytes + BOS + EOS =
// seq_len + 1), so the windows handed out name the documents read; over the rest of the epoch
// every document is read exactly once, except the documented replays, counted exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "lingua/data/loader.h"
#include "lingua/data/resplit.h"
#include "lingua/data/testing.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;
using namespace lingua::test_util;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kSeqLen = 9;  // a window: BOS, 8 bytes, EOS

// Chunk files of distinguishable documents ("a1-00007": source a, chunk 1, document 7), with a
// malformed line after every 5th document of odd chunks and a blank line in chunk 0 (lines are
// numbered with them, documents are not).
struct Corpus {
  TempDir root;
  std::map<std::string, std::map<std::string, std::vector<std::string>>> lines;  // source -> file name -> lines
  std::set<std::string> docs;

  explicit Corpus(const std::map<std::string, std::vector<int>>& docs_per_chunk) {
    for (const auto& [source, counts] : docs_per_chunk)
      for (size_t c = 0; c < counts.size(); ++c) {
        std::vector<std::string>& ls = lines[source][source + ".chunk." + std::to_string(c) + ".jsonl"];
        std::string text;
        for (int d = 0; d < counts[c]; ++d) {
          char doc[16];
          std::snprintf(doc, sizeof doc, "%s%zu-%05d", source.c_str(), c, d);
          docs.insert(doc);
          ls.push_back(json{{"text", doc}}.dump());
          if (c % 2 == 1 && d % 5 == 4) ls.push_back("{oops");
          if (c == 0 && d == 2) ls.push_back("");
        }
        for (const std::string& l : ls) text += l + "\n";
        write_file(root.path / source / (source + ".chunk." + std::to_string(c) + ".jsonl"), text);
      }
  }

  // The documents of `a` (one rank's share of a source) before reader position `s` in its epoch.
  std::vector<std::string> docs_before(const std::string& source, const std::vector<ChunkAssignment>& a,
                                       const SourceReaderState& s) const {
    std::vector<std::string> out;
    for (int64_t i = 0; i <= s.file_index && i < (int64_t)a.size(); ++i) {
      const auto& ls = lines.at(source).at(fs::path(a[i].path).filename().string());
      for (int64_t l = 0; l < (int64_t)ls.size() && (i < s.file_index || l < s.line); ++l) {
        std::string text;
        if (l % a[i].line_stride == a[i].line_offset && parse_document_line(ls[l], &text) == LineKind::document)
          out.push_back(text);
      }
    }
    return out;
  }

  std::vector<ChunkAssignment> share(const std::string& source, int rank, int world) const {
    return assign_chunks(find_chunk_files((root.path / source).string()), rank, world);
  }
};

DataConfig config_for(const Corpus& c, int batch, int prefetch) {
  DataConfig d;
  d.root_dir = c.root.str();
  for (const auto& [source, files] : c.lines) d.sources[source] = 1.0 + (double)d.sources.size();
  d.seq_len = kSeqLen;
  d.batch_size = batch;
  d.prefetch_size = prefetch;
  d.add_bos = d.add_eos = true;
  d.seed = 11;
  return d;
}

// The documents of a batch, one per window.
std::vector<std::string> docs_of(const Batch& b) {
  std::vector<std::string> out;
  for (int r = 0; r < b.batch_size; ++r) {
    const int32_t* in = b.input.data() + (size_t)r * b.seq_len;
    EXPECT_EQ(in[0], BytesTokenizer::kBos);
    EXPECT_EQ(b.target[(size_t)(r + 1) * b.seq_len - 1], BytesTokenizer::kEos);
    out.push_back(std::string(in + 1, in + b.seq_len));
  }
  return out;
}

SourceReaderState reader_of(const json& loader_state, const std::string& source) {
  return SourceReaderState::from_json(loader_state["fill_start"]["sources"][source]["reader"]);
}

// A run of phases: `worlds[i]` ranks, rank r reading batches[i][r] batches, then a re-split over
// the next phase's ranks; the last phase reads whole fills until every source of every rank is in
// epoch 1. Then over all phases every document of epoch 0 was read once, plus once more for each
// time it was in a batch handed out of a fill that was current at a re-split (resplit.h).
void check_chain(const Corpus& corpus, const DataConfig& cfg, const std::vector<int>& worlds,
                 const std::vector<std::vector<int>>& batches) {
  BytesTokenizer tok;
  const int P = cfg.prefetch_size, B = cfg.batch_size;
  std::map<std::string, int> count, replays;
  std::vector<json> states;
  for (size_t phase = 0; phase + 1 < worlds.size(); ++phase) {
    const int world = worlds[phase];
    ASSERT_EQ(batches[phase].size(), (size_t)world);
    std::vector<json> saved;
    int64_t replayed = 0, documents = 0;
    for (int r = 0; r < world; ++r) {
      DataConfig c = cfg;
      c.load_async = r % 2 == 1;
      DataLoader loader(c, tok, r, world);
      if (phase > 0) loader.load_state(states[r]);
      std::vector<std::vector<std::string>> got;
      for (int b = 0; b < batches[phase][r]; ++b) got.push_back(docs_of(loader.next()));
      for (const auto& ds : got)
        for (const auto& d : ds) ++count[d];
      const int partial = batches[phase][r] % P;  // batches handed out of the current fill
      for (int b = (int)got.size() - partial; b < (int)got.size(); ++b)
        for (const auto& d : got[b]) ++replays[d];
      replayed += (int64_t)partial * B;
      saved.push_back(loader.state());
      documents += saved.back()["fill_start"]["stats"]["documents"].get<int64_t>();
      // The accounting assumes what was handed out is of epoch 0: the current fill stays in it.
      DataLoader probe(c, tok, r, world);
      probe.load_state(saved.back());
      for (int b = partial; b < P && partial > 0; ++b) probe.next();
      for (const auto& [source, w] : cfg.sources)
        ASSERT_EQ(reader_of(probe.state(), source).epoch, 0) << "phase " << phase << " rank " << r << ": test setup";
    }
    ResplitSummary summary;
    const std::vector<json> before = saved;
    states = resplit_loader_states(saved, worlds[phase + 1], &summary);
    EXPECT_EQ(saved, before);
    EXPECT_EQ(summary.replayed_windows, replayed);
    ASSERT_EQ(states.size(), (size_t)worlds[phase + 1]);
    EXPECT_EQ(resplit_loader_states(saved, worlds[phase + 1]), states) << "not deterministic";
    int64_t after = 0;
    for (const json& s : states) after += s["fill_start"]["stats"]["documents"].get<int64_t>();
    EXPECT_EQ(after, documents) << "the counters' sum changed";
  }
  const int world = worlds.back();
  for (int r = 0; r < world; ++r) {
    DataConfig c = cfg;
    c.load_async = r % 2 == 0;
    DataLoader loader(c, tok, r, world);
    loader.load_state(states[r]);
    for (int fill = 0;; ++fill) {
      ASSERT_LT(fill, 1000);
      for (int b = 0; b < P; ++b)
        for (const auto& d : docs_of(loader.next())) ++count[d];
      const json s = loader.state();
      bool done = true;
      for (const auto& [source, w] : cfg.sources) done = done && reader_of(s, source).epoch >= 1;
      if (!done) continue;
      for (const auto& [source, w] : cfg.sources) {  // what this rank read of epoch 1 is not counted
        const SourceReaderState rd = reader_of(s, source);
        ASSERT_EQ(rd.epoch, 1) << "test setup: a source went round twice";
        EXPECT_TRUE(rd.already_read.empty()) << "kept past its epoch";
        for (const std::string& d : corpus.docs_before(source, corpus.share(source, r, world), rd)) --count[d];
      }
      break;
    }
  }
  int replayed_docs = 0;
  for (const std::string& d : corpus.docs) {
    EXPECT_EQ(count[d], 1 + replays[d]) << d;
    replayed_docs += replays[d];
  }
  int total = 0;
  for (const auto& [d, n] : count) total += n;
  EXPECT_EQ(total, (int)corpus.docs.size() + replayed_docs) << "a document not in the corpus";
}

}  // namespace

TEST(Resplit, EveryDocumentOfTheEpochOnceExceptTheCurrentFills) {
  // batch 2, prefetch 3: a fill is 6 windows. Batches per rank are chosen to stop mid-fill
  // (replays) and at fill boundaries (none), at different positions per rank.
  struct Case {
    std::vector<int> chunks;  // documents per chunk of source "a"
    int from, to;
    std::vector<int> batches;
  };
  const std::vector<Case> cases = {
      {{40, 37}, 2, 1, {4, 3}},                 // chunks == old ranks
      {{40, 37}, 1, 2, {7}},                    //
      {{40, 37}, 2, 3, {5, 3}},                 // chunks < new ranks: two share a chunk
      {{30, 31, 29}, 3, 2, {2, 4, 3}},          // chunks == old ranks > new ones
      {{25, 26, 27, 24, 23}, 4, 2, {3, 1, 6, 2}},  // more chunks than ranks
      {{70}, 4, 2, {2, 3, 4, 1}},               // one chunk shared by 4, then by 2
      {{34, 35}, 4, 2, {1, 2, 3, 3}},           // two chunks, each shared by 2 old ranks
      {{40, 37}, 2, 5, {2, 4}},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(::testing::Message() << k.from << " -> " << k.to << " ranks, " << k.chunks.size() << " chunks");
    Corpus corpus({{"a", k.chunks}});
    check_chain(corpus, config_for(corpus, 2, 3), {k.from, k.to}, {k.batches});
  }
}

TEST(Resplit, TwoSourcesAndAChainOfResplits) {
  // Each source is re-split on its own; 2 -> 3 -> 2 carries the lines read before the first
  // re-split through the second.
  Corpus corpus({{"a", {30, 33}}, {"b", {41, 39, 40}}});
  const DataConfig cfg = config_for(corpus, 2, 2);
  check_chain(corpus, cfg, {2, 3, 2}, {{3, 4}, {2, 3, 1}});
  check_chain(corpus, cfg, {3, 1, 4}, {{1, 2, 3}, {4}});
}

TEST(Resplit, SameRankCountKeepsTheStates) {
  Corpus corpus({{"a", {20, 20}}});
  BytesTokenizer tok;
  const DataConfig cfg = config_for(corpus, 2, 3);
  std::vector<json> states;
  for (int r = 0; r < 2; ++r) {
    DataLoader l(cfg, tok, r, 2);
    for (int b = 0; b < 2 + r; ++b) l.next();
    states.push_back(l.state());
    EXPECT_FALSE(states.back().dump().find("already_read") != std::string::npos);
  }
  ResplitSummary summary;
  EXPECT_EQ(resplit_loader_states(states, 2, &summary), states);
  EXPECT_EQ(summary.replayed_windows, 2 * 2);  // rank 0 is 2 batches into a fill, rank 1 at a boundary
}

TEST(Resplit, ResplitStatesResumeExactlyOnTheirOwnCount) {
  Corpus corpus({{"a", {30, 30, 30}}});
  BytesTokenizer tok;
  const DataConfig cfg = config_for(corpus, 2, 3);
  std::vector<json> old;
  for (int r = 0; r < 3; ++r) {
    DataLoader l(cfg, tok, r, 3);
    for (int b = 0; b < 4; ++b) l.next();
    old.push_back(l.state());
  }
  const std::vector<json> states = resplit_loader_states(old, 2);
  ASSERT_NE(states[0].dump().find("already_read"), std::string::npos);
  for (int r = 0; r < 2; ++r) {
    DataLoader a(cfg, tok, r, 2);
    a.load_state(states[r]);
    for (int n = 0; n < 4; ++n) a.next();  // mid-fill, still in the re-split epoch
    const json mid = json::parse(a.state().dump());
    ASSERT_NE(mid.dump().find("already_read"), std::string::npos);
    std::vector<Batch> want;
    for (int n = 0; n < 20; ++n) want.push_back(a.next());
    DataLoader b(cfg, tok, r, 2);
    b.load_state(mid);
    for (int n = 0; n < 20; ++n) EXPECT_EQ(b.next(), want[n]) << "rank " << r << " batch " << n;
    EXPECT_EQ(b.state(), a.state());
  }
}

TEST(Resplit, RanksAtDifferentEpochsAlignToTheLeastAdvanced) {
  // One document per batch, so each batch's epoch is its state's. Rank 0 (chunk 0, 3 documents)
  // is 2 documents into epoch 1, rank 1 (chunk 1, 9 documents) 4 into epoch 0: the new ranks read
  // the rest of epoch 0 (chunk 1's documents 4..8) and then epoch 1 whole, rank 0's 2 included.
  Corpus corpus({{"a", {3, 9}}});
  BytesTokenizer tok;
  const DataConfig cfg = config_for(corpus, 1, 1);
  std::map<std::string, int> epoch0;
  std::vector<json> old;
  for (auto [r, n] : {std::pair{0, 5}, {1, 4}}) {
    DataLoader l(cfg, tok, r, 2);
    for (int b = 0; b < n; ++b) {
      const std::string d = docs_of(l.next())[0];
      if (reader_of(l.state(), "a").epoch == 0) ++epoch0[d];
    }
    old.push_back(l.state());
  }
  EXPECT_EQ(reader_of(old[0], "a").epoch, 1);
  ResplitSummary summary;
  const json one = resplit_loader_states(old, 1, &summary)[0];
  EXPECT_EQ(summary.epoch, std::vector<int64_t>{0});
  EXPECT_EQ(summary.replayed_windows, 0);
  DataLoader l(cfg, tok, 0, 1);
  l.load_state(one);
  std::vector<std::string> rest, next_epoch;
  for (int b = 0; b < 8; ++b) {
    const std::string d = docs_of(l.next())[0];
    (reader_of(l.state(), "a").epoch == 0 ? rest : next_epoch).push_back(d);
  }
  EXPECT_EQ(rest, (std::vector<std::string>{"a1-00004", "a1-00005", "a1-00006", "a1-00007", "a1-00008"}));
  EXPECT_EQ(next_epoch, (std::vector<std::string>{"a0-00000", "a0-00001", "a0-00002"}));

  // Over 3 ranks (two share chunk 0... and chunk 1 is split by lines): epoch 0 once in all.
  const std::vector<json> three = resplit_loader_states(old, 3);
  for (int r = 0; r < 3; ++r) {
    DataLoader k(cfg, tok, r, 3);
    k.load_state(three[r]);
    for (int b = 0; b < 20; ++b) {
      const std::string d = docs_of(k.next())[0];
      if (reader_of(k.state(), "a").epoch > 0) break;
      ++epoch0[d];
    }
  }
  for (const std::string& d : corpus.docs) EXPECT_EQ(epoch0[d], 1) << d;
}

TEST(Resplit, UnpackedTokensGoToRankRModM) {
  // Documents longer than a window: a state holds the tail of its last document, which the new
  // rank r % M packs first.
  TempDir root;
  for (int c = 0; c < 3; ++c) {
    std::vector<std::string> docs;
    for (int d = 0; d < 10; ++d) docs.push_back(std::string(13, char('a' + c)) + std::to_string(d));
    write_file(root.path / "s" / ("s.chunk." + std::to_string(c) + ".jsonl"), jsonl_of(docs));
  }
  BytesTokenizer tok;
  DataConfig cfg;
  cfg.root_dir = root.str();
  cfg.sources = {{"s", 1.0}};
  cfg.seq_len = 9;
  cfg.batch_size = 1;
  cfg.prefetch_size = 1;
  std::vector<json> old;
  std::vector<std::vector<int32_t>> tails;
  for (int r = 0; r < 3; ++r) {
    DataLoader l(cfg, tok, r, 3);
    for (int b = 0; b < 1 + r; ++b) l.next();
    old.push_back(l.state());
    tails.push_back(old.back()["fill_start"]["sources"]["s"]["tokens"].get<std::vector<int32_t>>());
    ASSERT_FALSE(tails.back().empty());
  }
  const std::vector<json> two = resplit_loader_states(old, 2);
  std::vector<int32_t> want0 = tails[0];
  want0.insert(want0.end(), tails[2].begin(), tails[2].end());
  EXPECT_EQ(two[0]["fill_start"]["sources"]["s"]["tokens"].get<std::vector<int32_t>>(), want0);
  EXPECT_EQ(two[1]["fill_start"]["sources"]["s"]["tokens"].get<std::vector<int32_t>>(), tails[1]);
  DataLoader l(cfg, tok, 0, 2);
  l.load_state(two[0]);
  const Batch b = l.next();
  std::vector<int32_t> window(b.input.begin(), b.input.end());
  window.push_back(b.target.back());
  EXPECT_TRUE(std::equal(want0.begin(), want0.begin() + std::min<size_t>(want0.size(), window.size()), window.begin()));
}

TEST(Resplit, RngStreamsAreTheNewRanksAtTheHighestCounter) {
  Corpus corpus({{"a", {20, 20}}, {"b", {20}}});
  BytesTokenizer tok;
  const DataConfig cfg = config_for(corpus, 2, 2);
  std::vector<json> old;
  for (int r = 0; r < 2; ++r) {
    DataLoader l(cfg, tok, r, 2);
    for (int b = 0; b < 2 + 2 * r; ++b) l.next();
    old.push_back(l.state());
  }
  const std::vector<json> three = resplit_loader_states(old, 3);
  for (int k = 0; k < 3; ++k) {
    for (const char* rng : {"source_rng", "shuffle_rng"}) {
      const json& j = three[k]["fill_start"][rng];
      DataLoader fresh(cfg, tok, k, 3);
      EXPECT_EQ(j["stream"], fresh.state()["fill_start"][rng]["stream"]) << rng;
      EXPECT_EQ(j["seed"], fresh.state()["fill_start"][rng]["seed"]);
      EXPECT_EQ(j["counter"], std::max(old[0]["fill_start"][rng]["counter"], old[1]["fill_start"][rng]["counter"]));
    }
    EXPECT_EQ(three[k]["config"]["rank"], k);
    EXPECT_EQ(three[k]["config"]["world_size"], 3);
    EXPECT_EQ(three[k]["next_batch"], 0);
  }
}

TEST(Resplit, StatesThatDoNotBelongTogetherAreRefused) {
  Corpus corpus({{"a", {20, 20}}});
  BytesTokenizer tok;
  const DataConfig cfg = config_for(corpus, 2, 2);
  std::vector<json> old;
  for (int r = 0; r < 2; ++r) {
    DataLoader l(cfg, tok, r, 2);
    l.next();
    old.push_back(l.state());
  }
  auto error_with = [&](const std::function<void(std::vector<json>&)>& edit, int world = 1) {
    std::vector<json> s = old;
    edit(s);
    return error_of([&] { resplit_loader_states(s, world); });
  };
  EXPECT_NE(error_with([](auto& s) { std::swap(s[0], s[1]); }).find("saved by rank 1"), std::string::npos);
  EXPECT_NE(error_with([](auto& s) { s.pop_back(); }).find("world_size"), std::string::npos);
  EXPECT_NE(error_with([](auto& s) { s[1]["config"]["seq_len"] = 10; }).find("different configs"), std::string::npos);
  EXPECT_NE(error_with([](auto& s) { s[1]["fill_start"]["sources"]["a"]["reader"]["epoch"] = -1; }).find("rank 1 of 2"),
            std::string::npos);
  EXPECT_NE(error_with([](auto& s) { s[1]["files"]["a"][0]["file"] = "a.chunk.0.jsonl"; }).find("share"),
            std::string::npos);
  EXPECT_NE(error_with([](auto& s) { s[0]["next_batch"] = 2; }).find("next_batch"), std::string::npos);
  EXPECT_NE(error_with([](auto& s) { s[0] = json::array(); }).find("rank 0 of 2"), std::string::npos);
  EXPECT_NE(error_with([](auto&) {}, 0).find("0 ranks"), std::string::npos);
  EXPECT_NE(error_of([&] { resplit_loader_states({}, 1); }).find("none"), std::string::npos);
  // A re-split state whose already_read is out of range is refused by the loader.
  json bad = resplit_loader_states(old, 1)[0];
  bad["fill_start"]["sources"]["a"]["reader"]["already_read"]["a.chunk.0.jsonl"] =
      json::array({{{"stride", 2}, {"offset", 5}, {"end", -1}}});
  DataLoader l(cfg, tok, 0, 1);
  EXPECT_NE(error_of([&] { l.load_state(bad); }).find("already_read"), std::string::npos);
}
