#include "lingua/data/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/core/philox.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

constexpr uint32_t kPrepareShuffleStream = 0x9E9A7E00u;

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LINGUA_CHECK(in.is_open(), "prepare: cannot open input ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Paragraphs (runs of non-blank lines) grouped into documents of >= min_chars code points.
void split_text(const std::string& path, int64_t min_chars, std::vector<std::string>* docs, int64_t* replaced) {
  std::string data = read_file(path);
  *replaced += sanitize_utf8(&data);
  std::string doc, paragraph;
  auto end_paragraph = [&] {
    if (paragraph.empty()) return;
    if (!doc.empty()) doc += "\n\n";
    doc += paragraph;
    paragraph.clear();
    if (utf8_length(doc) >= min_chars) docs->push_back(std::move(doc)), doc.clear();
  };
  std::istringstream in(data);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\f\v") == std::string::npos) {
      end_paragraph();
    } else {
      if (!paragraph.empty()) paragraph += '\n';
      paragraph += line;
    }
  }
  end_paragraph();
  if (!doc.empty()) docs->push_back(std::move(doc));
}

void read_jsonl(const std::string& path, std::vector<std::string>* docs, DataStats* stats) {
  std::ifstream in(path, std::ios::binary);
  LINGUA_CHECK(in.is_open(), "prepare: cannot open input ", path);
  std::string line, text;
  while (std::getline(in, line)) {
    LineKind kind = parse_document_line(line, &text);
    if (kind == LineKind::document) {
      ++stats->documents;
      docs->push_back(std::move(text));
    } else {
      count_skipped_line(kind, stats);
    }
  }
}

// Writes one {"text": ...} line per document to path, through a temporary file.
void write_jsonl(const fs::path& path, const std::vector<const std::string*>& docs) {
  const fs::path tmp = path.string() + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    LINGUA_CHECK(out.is_open(), "prepare: cannot write ", tmp.string());
    for (const std::string* d : docs) out << nlohmann::json{{"text", *d}}.dump() << '\n';
    out.flush();
    LINGUA_CHECK(out.good(), "prepare: error writing ", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp);
    fail("prepare: cannot rename ", tmp.string(), " to ", path.string(), ": ", ec.message());
  }
}

}  // namespace

PrepareResult prepare_corpus(const PrepareOptions& o) {
  LINGUA_CHECK(!o.inputs.empty(), "prepare: no input files");
  LINGUA_CHECK(!o.out_dir.empty(), "prepare: no output directory");
  LINGUA_CHECK(!o.source.empty() && o.source.find('/') == std::string::npos && o.source != "." && o.source != "..",
               "prepare: source name '", o.source, "' must be a non-empty directory name");
  LINGUA_CHECK(o.n_chunks >= 1, "prepare: n_chunks must be >= 1 (got ", o.n_chunks, ")");
  LINGUA_CHECK(o.val_docs >= 0 || (o.val_fraction >= 0 && o.val_fraction < 1), "prepare: val_fraction ",
               o.val_fraction, " must be in [0, 1)");
  LINGUA_CHECK(o.min_doc_chars >= 0, "prepare: min_doc_chars must be >= 0");

  PrepareResult r;
  std::vector<std::string> docs;
  for (const auto& path : o.inputs) {
    LINGUA_CHECK(fs::is_regular_file(path), "prepare: input ", path, " does not exist");
    if (has_suffix(path, ".txt")) {
      split_text(path, o.min_doc_chars, &docs, &r.invalid_utf8_replaced);
    } else if (has_suffix(path, ".jsonl")) {
      read_jsonl(path, &docs, &r.skipped);
    } else {
      fail("prepare: input ", path, " is neither .txt nor .jsonl");
    }
  }
  const int64_t n = static_cast<int64_t>(docs.size());
  LINGUA_CHECK(n > 0, "prepare: the inputs hold no document");

  int64_t n_val;
  if (o.val_docs >= 0) {
    n_val = o.val_docs;
    LINGUA_CHECK(n_val < n, "prepare: val_docs ", n_val, " leaves no training document (", n, " documents)");
  } else {
    n_val = std::llround(o.val_fraction * static_cast<double>(n));
    if (n >= 2) n_val = std::clamp<int64_t>(n_val, 1, n - 1);
    else n_val = 0;
  }
  const int64_t n_train = n - n_val;
  LINGUA_CHECK(n_train >= o.n_chunks, "prepare: n_chunks ", o.n_chunks, " is more than the ", n_train,
               " training documents (a chunk would be empty)");

  // Shuffle (Fisher-Yates), validation first.
  PhiloxStream rng(o.seed, kPrepareShuffleStream);
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);

  const fs::path dir = fs::path(o.out_dir) / o.source;
  fs::create_directories(dir);
  r.source_dir = dir.string();
  std::set<std::string> existing;  // this source's chunk / val files from before
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (has_suffix(name, ".jsonl") && (name.find(".chunk.") != std::string::npos || has_suffix(name, ".val.jsonl")))
      existing.insert(e.path().string());
  }
  LINGUA_CHECK(o.overwrite || existing.empty(), "prepare: ", dir.string(), " already holds ", *existing.begin(),
               " (set overwrite to replace the source's files)");

  const int width = std::max<int>(2, static_cast<int>(std::to_string(o.n_chunks - 1).size()));
  std::vector<std::vector<const std::string*>> chunks(o.n_chunks);
  std::vector<const std::string*> val;
  for (int64_t i = 0; i < n; ++i) {
    const std::string& d = docs[order[i]];
    const int64_t chars = utf8_length(d), bytes = static_cast<int64_t>(d.size());
    if (i < n_val) {
      val.push_back(&d);
      r.val_chars += chars;
      r.val_bytes += bytes;
    } else {
      chunks[(i - n_val) % o.n_chunks].push_back(&d);
      r.train_chars += chars;
      r.train_bytes += bytes;
    }
  }
  r.val_docs = n_val;
  r.train_docs = n_train;
  for (int c = 0; c < o.n_chunks; ++c) {
    std::string idx = std::to_string(c);
    idx.insert(0, width - idx.size(), '0');
    const fs::path p = dir / (o.source + ".chunk." + idx + ".jsonl");
    write_jsonl(p, chunks[c]);
    r.chunk_files.push_back(p.string());
  }
  const fs::path vp = dir / (o.source + ".val.jsonl");
  write_jsonl(vp, val);
  r.val_file = vp.string();
  // Stale files of an earlier run (e.g. more chunks) would otherwise be read by the loader.
  for (const auto& old : existing)
    if (std::find(r.chunk_files.begin(), r.chunk_files.end(), old) == r.chunk_files.end() && old != r.val_file)
      fs::remove(old);
  return r;
}

}  // namespace lingua
