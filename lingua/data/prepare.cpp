#include "lingua/data/prepare.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/core/philox.h"
#include "lingua/data/paths.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

constexpr uint32_t kPrepareShuffleStream = 0x9E9A7E00u;

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(std::string_view s) { return s.find_first_not_of(" \t\n\r\f\v") == std::string_view::npos; }

std::string read_plain(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LINGUA_CHECK(in.is_open(), "prepare: cannot open input ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  LINGUA_CHECK(!in.bad(), "prepare: error reading input ", path);
  return ss.str();
}

// The decompressed bytes of a gzip file (several gzip members are read one after the other).
std::string read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  LINGUA_CHECK(f, "prepare: cannot open input ", path);
  gzbuffer(f, 1 << 17);
  std::string out;
  std::vector<char> buf(1 << 16);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int code = 0;
      const std::string why = gzerror(f, &code);
      gzclose(f);
      fail("prepare: cannot decompress input ", path, ": ", why);
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  // A truncated stream ends the reads quietly; gzclose reports it.
  const int closed = gzclose(f);
  LINGUA_CHECK(closed == Z_OK, "prepare: cannot decompress input ", path,
               closed == Z_BUF_ERROR ? ": the gzip stream is truncated" : ": read error");
  return out;
}

// Paragraphs (runs of non-blank lines) grouped into documents of >= min_chars code points.
void split_text(std::string data, int64_t min_chars, std::vector<std::string>* docs, PrepareInputStats* st) {
  st->invalid_utf8_replaced += sanitize_utf8(&data);
  std::string doc, paragraph;
  auto end_paragraph = [&] {
    if (paragraph.empty()) return;
    ++st->paragraphs;
    if (!doc.empty()) doc += "\n\n";
    doc += paragraph;
    paragraph.clear();
    if (utf8_length(doc) >= min_chars) docs->push_back(std::move(doc)), ++st->documents, doc.clear();
  };
  std::istringstream in(std::move(data));
  std::string line;
  while (std::getline(in, line)) {
    ++st->lines;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\f\v") == std::string::npos) {
      end_paragraph();
    } else {
      if (!paragraph.empty()) paragraph += '\n';
      paragraph += line;
    }
  }
  end_paragraph();
  if (!doc.empty()) docs->push_back(std::move(doc)), ++st->documents;
}

void split_jsonl(const std::string& data, std::vector<std::string>* docs, PrepareInputStats* st) {
  std::string text;
  for (size_t pos = 0; pos < data.size();) {
    size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    ++st->lines;
    LineKind kind = parse_document_line(std::string_view(data).substr(pos, end - pos), &text);
    pos = end + 1;
    if (kind == LineKind::blank) {
      ++st->blank_lines;
    } else if (kind != LineKind::document) {
      count_skipped_line(kind, &st->skipped);
    } else if (is_blank(text)) {
      ++st->empty_texts;  // nothing to learn from, and nothing to score
    } else {
      ++st->skipped.documents;
      ++st->documents;
      docs->push_back(std::move(text));
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

std::string PrepareInputStats::describe() const {
  std::ostringstream s;
  s << path << ": ";
  if (bytes == 0) {
    s << "empty" << (gzip ? " after decompression" : "");
  } else if (has_suffix(gzip ? path.substr(0, path.size() - 3) : path, ".txt")) {
    s << lines << " lines, " << paragraphs << " paragraphs" << (lines > 0 && paragraphs == 0 ? " (all lines blank)" : "")
      << " -> " << documents << " documents";
    if (invalid_utf8_replaced) s << "; " << invalid_utf8_replaced << " invalid UTF-8 sequences replaced";
  } else {
    s << lines << " lines -> " << documents << " documents; skipped: bad JSON " << skipped.bad_json
      << ", no string \"text\"/\"content\" " << skipped.missing_text << ", invalid UTF-8 " << skipped.invalid_utf8
      << ", empty text " << empty_texts << ", blank lines " << blank_lines;
  }
  return s.str();
}

PrepareResult prepare_corpus(const PrepareOptions& o) {
  LINGUA_CHECK(!o.inputs.empty(), "prepare: no input files");
  LINGUA_CHECK(!o.out_dir.empty(), "prepare: no output directory");
  LINGUA_CHECK(!o.source.empty() && o.source.find('/') == std::string::npos && o.source != "." && o.source != "..",
               "prepare: source name '", o.source, "' must be a non-empty directory name");
  LINGUA_CHECK(o.n_chunks >= 1, "prepare: n_chunks must be >= 1 (got ", o.n_chunks, ")");
  LINGUA_CHECK(o.val_docs >= 0 || (o.val_fraction >= 0 && o.val_fraction < 1), "prepare: val_fraction ",
               o.val_fraction, " must be in [0, 1)");
  LINGUA_CHECK(o.min_doc_chars >= 0, "prepare: min_doc_chars must be >= 0");
  if (fs::exists(o.out_dir)) require_directory(o.out_dir, "prepare: out_dir");

  PrepareResult r;
  std::vector<std::string> docs;
  for (const auto& path : o.inputs) {
    require_regular_file(path, "prepare: input");
    PrepareInputStats st;
    st.path = path;
    st.gzip = has_suffix(path, ".gz");
    const std::string name = st.gzip ? path.substr(0, path.size() - 3) : path;  // what the contents are
    const bool txt = has_suffix(name, ".txt");
    LINGUA_CHECK(txt || has_suffix(name, ".jsonl"), "prepare: input ", path,
                 " is not .txt or .jsonl (optionally gzip-compressed: .txt.gz, .jsonl.gz)");
    std::string data = st.gzip ? read_gzip(path) : read_plain(path);
    st.bytes = static_cast<int64_t>(data.size());
    if (txt) {
      split_text(std::move(data), o.min_doc_chars, &docs, &st);
      r.invalid_utf8_replaced += st.invalid_utf8_replaced;
    } else {
      split_jsonl(data, &docs, &st);
      r.empty_texts += st.empty_texts;
      r.skipped.documents += st.skipped.documents;
      r.skipped.bad_json += st.skipped.bad_json;
      r.skipped.missing_text += st.skipped.missing_text;
      r.skipped.invalid_utf8 += st.skipped.invalid_utf8;
    }
    r.inputs.push_back(std::move(st));
  }
  const int64_t n = static_cast<int64_t>(docs.size());
  if (n == 0) {
    std::string why;
    for (const auto& st : r.inputs) why += "\n  " + st.describe();
    fail("prepare: the inputs hold no document:", why);
  }

  int64_t n_val;
  if (o.val_docs >= 0) {
    n_val = o.val_docs;
    LINGUA_CHECK(n_val < n, "prepare: val_docs ", n_val, " leaves no training document (", n, " documents)");
  } else if (o.val_fraction == 0 || n < 2) {
    n_val = 0;  // with one document, it is needed for training
  } else {
    n_val = std::clamp<int64_t>(std::llround(o.val_fraction * static_cast<double>(n)), 1, n - 1);
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
  if (fs::exists(dir)) require_directory(dir.string(), "prepare: source directory");
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
  // No validation file without documents: an empty one would make validation fail later, while
  // a source without one is simply not validated.
  if (n_val > 0) {
    const fs::path vp = dir / (o.source + ".val.jsonl");
    write_jsonl(vp, val);
    r.val_file = vp.string();
  }
  // Stale files of an earlier run (e.g. more chunks) would otherwise be read by the loader.
  for (const auto& old : existing)
    if (std::find(r.chunk_files.begin(), r.chunk_files.end(), old) == r.chunk_files.end() && old != r.val_file)
      fs::remove(old);
  return r;
}

}  // namespace lingua
