#pragma once
// JSONL corpora: one JSON object per line, the document under "text" (or else "content").
// Layout: <root_dir>/<source>/*.chunk.*.jsonl (training) and <source>/*.val.jsonl (validation).
// A malformed line is skipped and counted by reason, never fatal: a corpus with a few broken lines
// should not stop a run.
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lingua/core/utf8.h"

namespace lingua {

// What the data pipeline has read so far.
struct DataStats {
  int64_t documents = 0;     // lines that held a document
  int64_t tokens = 0;        // tokens the tokenizer made of them (BOS/EOS included)
  int64_t bad_json = 0;      // skipped: not parseable JSON (but valid UTF-8)
  int64_t missing_text = 0;  // skipped: JSON, but not an object with a string "text" or "content"
  int64_t invalid_utf8 = 0;  // skipped: the line's bytes are not valid UTF-8
  int64_t skipped() const { return bad_json + missing_text + invalid_utf8; }
  // "3 malformed lines (bad JSON 2, no text/content 1, invalid UTF-8 0)", for the console.
  std::string skipped_summary() const;
  bool operator==(const DataStats&) const = default;
  nlohmann::json to_json() const;  // {"documents": .., "tokens": .., "skipped": {"bad_json": .., ...}}
  static DataStats from_json(const nlohmann::json& j);
};

enum class LineKind { document, blank, bad_json, missing_text, invalid_utf8 };

// Classifies one line (without its newline); for LineKind::document *text receives the document.
// Blank (whitespace-only) lines are ignored without being counted.
LineKind parse_document_line(std::string_view line, std::string* text);
// Adds a skipped line to the counter of its reason (no-op for document / blank).
void count_skipped_line(LineKind kind, DataStats* stats);

// is_valid_utf8: lingua/core/utf8.h.
// Replaces every invalid byte sequence with U+FFFD; returns how many were replaced.
int64_t sanitize_utf8(std::string* s);
// `text` itself when it is valid UTF-8, else its sanitize_utf8 copy kept in *storage.
std::string_view as_valid_utf8(std::string_view text, std::string* storage);
// Number of code points of valid UTF-8 (counts lead bytes).
int64_t utf8_length(std::string_view s);

// Sorted paths of <source_dir>/*.chunk.*.jsonl (*.val.jsonl excluded). Fails naming the path when
// the directory is missing or a file, holds no chunk file, or a chunk name is a directory.
std::vector<std::string> find_chunk_files(const std::string& source_dir);
// Sorted paths of <source_dir>/*.val.jsonl, possibly none. Fails as find_chunk_files does (but
// not when there is none).
std::vector<std::string> find_validation_files(const std::string& source_dir);

// Reads the documents of a source's *.val.jsonl files once, in file order then line order.
class ValidationReader {
 public:
  // Fails naming the directory when it is missing or holds no *.val.jsonl file.
  explicit ValidationReader(const std::string& source_dir);
  // The next document into *text; false at the end. Skipped lines are counted in *stats (may be null).
  bool next(std::string* text, DataStats* stats);
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::vector<std::string> files_;
  size_t file_index_ = 0;
  std::ifstream in_;
  std::string line_;
};

// Up to max_docs validation documents of source_dir (max_docs 0: all of them).
std::vector<std::string> read_validation_texts(const std::string& source_dir, size_t max_docs, DataStats* stats);

}  // namespace lingua
