// Tests of prepare_corpus (`lingua prepare`): the layout it writes, the validation split
// (val_fraction 0 holds nothing out), gzip inputs, and errors that say why no document was found.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "lingua/data/jsonl.h"
#include "lingua/data/loader.h"
#include "lingua/data/prepare.h"
#include "lingua/data/testing.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;
using namespace lingua::test_util;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {
std::vector<std::string> texts_of(const fs::path& file) {
  std::vector<std::string> out;
  std::ifstream in(file);
  std::string line, text;
  while (std::getline(in, line)) {
    EXPECT_EQ(parse_document_line(line, &text), LineKind::document) << line;
    out.push_back(text);
  }
  return out;
}
}  // namespace

TEST(Prepare, LayoutCountsAndLoaderReadsIt) {
  TempDir dir;
  // Paragraphs of 50 characters; min_doc_chars 120 groups them three at a time (2 * 50 + 2 < 120).
  std::string txt;
  std::vector<std::string> paragraphs;
  for (int p = 0; p < 8; ++p) {
    std::string para = "paragraph " + std::to_string(p) + " first line, some words\nsecond line \xC3\xA9t\xC3\xA9";
    paragraphs.push_back(para);
    txt += para + (p % 2 ? "\n\n\n" : "\r\n \r\n");
  }
  write_file(dir.path / "in" / "book.txt", txt);
  std::vector<std::string> expected = {paragraphs[0] + "\n\n" + paragraphs[1] + "\n\n" + paragraphs[2],
                                       paragraphs[3] + "\n\n" + paragraphs[4] + "\n\n" + paragraphs[5],
                                       paragraphs[6] + "\n\n" + paragraphs[7]};
  std::string jl;
  for (int i = 0; i < 20; ++i) {
    jl += json{{i % 2 ? "text" : "content", "json doc " + std::to_string(i)}}.dump() + "\n";
    expected.push_back("json doc " + std::to_string(i));
  }
  jl += "{not json\n";
  write_file(dir.path / "in" / "docs.jsonl", jl);

  PrepareOptions o;
  o.inputs = {(dir.path / "in" / "book.txt").string(), (dir.path / "in" / "docs.jsonl").string()};
  o.out_dir = (dir.path / "out").string();
  o.source = "demo";
  o.n_chunks = 3;
  o.min_doc_chars = 120;
  o.seed = 5;
  PrepareResult r = prepare_corpus(o);
  EXPECT_EQ(r.train_docs + r.val_docs, 23);
  EXPECT_EQ(r.val_docs, 1);  // 1% of 23 rounds to 0, at least one
  EXPECT_EQ(r.skipped.bad_json, 1);
  EXPECT_EQ(r.skipped.documents, 20);

  const fs::path sd = dir.path / "out" / "demo";
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(sd)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"demo.chunk.00.jsonl", "demo.chunk.01.jsonl", "demo.chunk.02.jsonl",
                                          "demo.val.jsonl"}));
  std::vector<std::string> got;
  int64_t chars = 0;
  for (const auto& f : r.chunk_files) {
    auto t = texts_of(f);
    EXPECT_GE(t.size(), 7u);  // 22 documents dealt round-robin
    for (const auto& s : t) chars += utf8_length(s);
    got.insert(got.end(), t.begin(), t.end());
  }
  EXPECT_EQ(chars, r.train_chars);
  auto val = texts_of(r.val_file);
  ASSERT_EQ(val.size(), 1u);
  EXPECT_EQ(utf8_length(val[0]), r.val_chars);
  got.push_back(val[0]);
  std::sort(got.begin(), got.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(got, expected);

  // Deterministic for a seed; a second run into the same place needs overwrite.
  PrepareOptions o2 = o;
  o2.out_dir = (dir.path / "out2").string();
  auto r2 = prepare_corpus(o2);
  for (size_t i = 0; i < r.chunk_files.size(); ++i) EXPECT_EQ(read_file(r.chunk_files[i]), read_file(r2.chunk_files[i]));
  EXPECT_NE(error_of([&] { prepare_corpus(o); }).find("overwrite"), std::string::npos);
  o2.overwrite = true;
  o2.n_chunks = 2;
  prepare_corpus(o2);
  EXPECT_FALSE(fs::exists(dir.path / "out2" / "demo" / "demo.chunk.02.jsonl"));  // stale chunk removed
  EXPECT_TRUE(fs::exists(dir.path / "out2" / "demo" / "demo.chunk.01.jsonl"));

  // The loader and the validation reader take the output as it is.
  BytesTokenizer tok;
  DataConfig dc;
  dc.root_dir = o.out_dir;
  dc.sources = {{"demo", 1.0}};
  dc.seq_len = 32;
  dc.batch_size = 2;
  dc.prefetch_size = 2;
  DataLoader loader(dc, tok);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(loader.next().input.size(), 64u);
  EXPECT_EQ(read_validation_texts(sd.string(), 0, nullptr), val);
}

TEST(Prepare, Errors) {
  TempDir dir;
  write_file(dir.path / "a.csv", "x");
  write_file(dir.path / "one.jsonl", jsonl_of({"only", "two"}));
  PrepareOptions o;
  o.out_dir = (dir.path / "out").string();
  o.source = "s";
  o.inputs = {(dir.path / "missing.txt").string()};
  EXPECT_NE(error_of([&] { prepare_corpus(o); }).find("missing.txt"), std::string::npos);
  o.inputs = {(dir.path / "a.csv").string()};
  EXPECT_NE(error_of([&] { prepare_corpus(o); }).find("a.csv"), std::string::npos);
  o.inputs = {(dir.path / "one.jsonl").string()};
  o.n_chunks = 2;  // 2 documents, 1 for validation: one training document for two chunks
  EXPECT_NE(error_of([&] { prepare_corpus(o); }).find("n_chunks"), std::string::npos);
  o.n_chunks = 1;
  o.val_docs = 2;
  EXPECT_NE(error_of([&] { prepare_corpus(o); }).find("val_docs"), std::string::npos);
  o.val_docs = 0;
  auto r = prepare_corpus(o);
  EXPECT_EQ(r.train_docs, 2);
  EXPECT_EQ(r.val_docs, 0);
  EXPECT_EQ(r.val_file, "");  // nothing held out: no validation file
  EXPECT_FALSE(fs::exists(dir.path / "out" / "s" / "s.val.jsonl"));
}

namespace {

void write_gzip(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  gzFile f = gzopen(p.string().c_str(), "wb");
  ASSERT_NE(f, nullptr) << p;
  ASSERT_EQ(gzwrite(f, content.data(), static_cast<unsigned>(content.size())), static_cast<int>(content.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

PrepareOptions options_for(const fs::path& dir, std::vector<std::string> inputs) {
  PrepareOptions o;
  o.inputs = std::move(inputs);
  o.out_dir = (dir / "out").string();
  o.source = "s";
  o.min_doc_chars = 1;  // every .txt paragraph a document
  return o;
}

std::vector<std::string> docs_of(const std::string& text) {
  std::vector<std::string> d;
  for (int i = 0; i < 10; ++i) d.push_back(text + " " + std::to_string(i));
  return d;
}

}  // namespace

TEST(Prepare, ValFractionZeroHoldsNothingOut) {
  TempDir dir;
  write_file(dir.path / "docs.jsonl", jsonl_of(docs_of("doc")));
  PrepareOptions o = options_for(dir.path, {(dir.path / "docs.jsonl").string()});
  o.val_fraction = 0;
  PrepareResult r = prepare_corpus(o);
  EXPECT_EQ(r.val_docs, 0);
  EXPECT_EQ(r.train_docs, 10);
  EXPECT_EQ(r.val_file, "");
  EXPECT_EQ(texts_of(r.chunk_files.at(0)).size(), 10u);
  EXPECT_FALSE(fs::exists(dir.path / "out" / "s" / "s.val.jsonl"));

  // A later run with validation, then one without, into the same place: the stale validation
  // file goes (it would be validated on, though its documents are now training documents).
  o.overwrite = true;
  o.val_fraction = 0.2;
  r = prepare_corpus(o);
  EXPECT_EQ(r.val_docs, 2);
  EXPECT_EQ(texts_of(r.val_file).size(), 2u);
  o.val_fraction = 0;
  r = prepare_corpus(o);
  EXPECT_FALSE(fs::exists(dir.path / "out" / "s" / "s.val.jsonl"));

  // Small fractions round up to one document; one document alone is kept for training.
  o.val_fraction = 0.001;
  EXPECT_EQ(prepare_corpus(o).val_docs, 1);
  write_file(dir.path / "one.jsonl", jsonl_of({"the only document"}));
  o.inputs = {(dir.path / "one.jsonl").string()};
  o.val_fraction = 0.5;
  r = prepare_corpus(o);
  EXPECT_EQ(r.val_docs, 0);
  EXPECT_EQ(r.train_docs, 1);
}

TEST(Prepare, ReadsGzipInputsAsTheirUncompressedNames) {
  TempDir dir;
  const std::string txt = "first paragraph\nof the book\n\nsecond \xC3\xA9 paragraph\n";
  std::string jl = jsonl_of({"json one", "json two"}) + "{broken\n";
  write_gzip(dir.path / "book.txt.gz", txt);
  write_gzip(dir.path / "docs.jsonl.gz", jl);
  write_file(dir.path / "plain" / "book.txt", txt);
  write_file(dir.path / "plain" / "docs.jsonl", jl);

  PrepareOptions o = options_for(dir.path, {(dir.path / "book.txt.gz").string(), (dir.path / "docs.jsonl.gz").string()});
  o.val_fraction = 0;
  PrepareResult r = prepare_corpus(o);
  PrepareOptions p = options_for(dir.path / "plain", {(dir.path / "plain" / "book.txt").string(),
                                                      (dir.path / "plain" / "docs.jsonl").string()});
  p.val_fraction = 0;
  PrepareResult q = prepare_corpus(p);
  // The same documents as the uncompressed files, in the same (seeded) order.
  EXPECT_EQ(r.train_docs, 4);
  EXPECT_EQ(read_file(r.chunk_files.at(0)), read_file(q.chunk_files.at(0)));
  std::vector<std::string> got = texts_of(r.chunk_files.at(0));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"first paragraph\nof the book", "json one", "json two",
                                           "second \xC3\xA9 paragraph"}));
  EXPECT_EQ(r.skipped.bad_json, 1);
  ASSERT_EQ(r.inputs.size(), 2u);
  EXPECT_TRUE(r.inputs[0].gzip);
  EXPECT_EQ(r.inputs[0].bytes, static_cast<int64_t>(txt.size()));  // decompressed

  // A truncated stream is an error naming the file, not a silently shorter corpus.
  std::string big;
  for (int i = 0; i < 4000; ++i) big += json{{"text", "document number " + std::to_string(i * 7919)}}.dump() + "\n";
  write_gzip(dir.path / "big.jsonl.gz", big);
  const std::string gz = read_file(dir.path / "big.jsonl.gz");
  write_file(dir.path / "cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  o.inputs = {(dir.path / "cut.jsonl.gz").string()};
  o.overwrite = true;
  const std::string msg = error_of([&] { prepare_corpus(o); });
  EXPECT_NE(msg.find("cut.jsonl.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  write_gzip(dir.path / "notes.md.gz", "x");
  o.inputs = {(dir.path / "notes.md.gz").string()};
  EXPECT_NE(error_of([&] { prepare_corpus(o); }).find(".jsonl.gz"), std::string::npos);
}

TEST(Prepare, NoDocumentErrorSaysWhyFileByFile) {
  TempDir dir;
  // Every line of a.jsonl is skipped, for each reason; b.txt has only blank lines; c.txt is empty.
  write_file(dir.path / "a.jsonl", "{broken\n{\"body\": \"x\"}\n{\"text\": 3}\n{\"text\": \"\xff\"}\n"
                                   "{\"text\": \"\"}\n{\"content\": \"  \\n\"}\n\n");
  write_file(dir.path / "b.txt", "\n  \n\t\n");
  write_file(dir.path / "c.txt", "");
  PrepareOptions o = options_for(dir.path, {(dir.path / "a.jsonl").string(), (dir.path / "b.txt").string(),
                                            (dir.path / "c.txt").string()});
  const std::string msg = error_of([&] { prepare_corpus(o); });
  EXPECT_NE(msg.find("no document"), std::string::npos) << msg;
  for (const std::string& s :
       {(dir.path / "a.jsonl").string() + ": 7 lines -> 0 documents", std::string("bad JSON 1"),
        std::string("no string \"text\"/\"content\" 2"), std::string("invalid UTF-8 1"), std::string("empty text 2"),
        std::string("blank lines 1"), (dir.path / "b.txt").string() + ": 3 lines, 0 paragraphs (all lines blank)",
        (dir.path / "c.txt").string() + ": empty"})
    EXPECT_NE(msg.find(s), std::string::npos) << "missing '" << s << "' in:\n" << msg;

  // With one good document the same inputs prepare, and the counts are reported.
  write_file(dir.path / "d.jsonl", jsonl_of({"good"}));
  o.inputs.push_back((dir.path / "d.jsonl").string());
  PrepareResult r = prepare_corpus(o);
  EXPECT_EQ(r.train_docs, 1);
  EXPECT_EQ(r.empty_texts, 2);
  EXPECT_EQ(r.skipped.skipped(), 4);
  EXPECT_EQ(r.inputs.at(0).blank_lines, 1);
  EXPECT_EQ(r.inputs.at(3).documents, 1);
}

TEST(Prepare, PathErrorsSayWhatIsWrong) {
  TempDir dir;
  fs::create_directories(dir.path / "folder.txt");
  write_file(dir.path / "docs.jsonl", jsonl_of(docs_of("doc")));
  write_file(dir.path / "file", "x");
  PrepareOptions o = options_for(dir.path, {(dir.path / "folder.txt").string()});
  std::string msg = error_of([&] { prepare_corpus(o); });
  EXPECT_NE(msg.find((dir.path / "folder.txt").string() + " is a directory, expected a file"), std::string::npos) << msg;
  o.inputs = {(dir.path / "nope.txt").string()};
  EXPECT_NE(error_of([&] { prepare_corpus(o); }).find("nope.txt does not exist"), std::string::npos);
  o.inputs = {(dir.path / "docs.jsonl").string()};
  o.out_dir = (dir.path / "file").string();
  msg = error_of([&] { prepare_corpus(o); });
  EXPECT_NE(msg.find((dir.path / "file").string() + " is a file, expected a directory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("out_dir"), std::string::npos) << msg;
  o.out_dir = dir.path.string();
  o.source = "file";  // out_dir/file exists as a file
  msg = error_of([&] { prepare_corpus(o); });
  EXPECT_NE(msg.find("is a file, expected a directory"), std::string::npos) << msg;
}
