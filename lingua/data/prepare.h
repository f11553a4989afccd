#pragma once
// `lingua prepare`: turns plain text or JSONL files into the corpus layout the loader reads,
//   <out_dir>/<source>/<source>.chunk.00.jsonl ... and <out_dir>/<source>/<source>.val.jsonl,
// one {"text": ...} object per line. Documents are held in memory to be shuffled.
#include <cstdint>
#include <string>
#include <vector>

#include "lingua/data/jsonl.h"

namespace lingua {

struct PrepareOptions {
  // Input files, by extension (a further .gz: gzip-compressed, read as the name without it):
  // .txt is split into paragraphs at blank lines, consecutive paragraphs of one file grouped into
  // documents of at least min_doc_chars characters (the file's last document may be shorter);
  // .jsonl holds one document per line under "text" or "content" (malformed lines are skipped and
  // counted, as in the loader; documents whose text is empty or whitespace are dropped and counted).
  std::vector<std::string> inputs;
  std::string out_dir;
  std::string source;           // name of the source directory and the file prefix
  int n_chunks = 1;             // training chunk files; documents are dealt round-robin
  double val_fraction = 0.01;   // share of documents for validation, when val_docs < 0
  int64_t val_docs = -1;        // exact number of validation documents (>= 0 overrides val_fraction)
  int64_t min_doc_chars = 2000; // .txt: minimum characters (code points) per document
  uint64_t seed = 42;           // document shuffle (PhiloxStream)
  bool overwrite = false;       // replace this source's existing chunk/val files (stale ones removed)
};

// What one input file held.
struct PrepareInputStats {
  std::string path;
  bool gzip = false;
  int64_t bytes = 0;         // after decompression
  int64_t documents = 0;     // kept
  // .jsonl
  int64_t lines = 0;         // all lines, blank and malformed ones included
  int64_t blank_lines = 0;
  int64_t empty_texts = 0;   // documents whose text is empty or whitespace only (dropped)
  DataStats skipped;         // malformed lines by reason
  // .txt
  int64_t paragraphs = 0;    // grouped into the documents
  int64_t invalid_utf8_replaced = 0;  // ill-formed byte sequences written as U+FFFD
  // "docs.jsonl.gz: 12 lines: 0 documents; bad JSON 3, no text/content 2, ...", for messages.
  std::string describe() const;
};

struct PrepareResult {
  std::string source_dir;
  std::vector<std::string> chunk_files;  // in order
  std::string val_file;                  // empty when no document is held out (no file written)
  int64_t train_docs = 0, val_docs = 0;
  int64_t train_chars = 0, val_chars = 0;  // code points
  int64_t train_bytes = 0, val_bytes = 0;
  int64_t invalid_utf8_replaced = 0;  // all .txt inputs
  int64_t empty_texts = 0;            // all .jsonl inputs
  DataStats skipped;                  // all .jsonl inputs: malformed lines by reason (documents: kept)
  std::vector<PrepareInputStats> inputs;  // per input, in the order given
};

// Reads the inputs, shuffles the documents, sets aside the validation documents (by default 1%,
// at least one when val_fraction > 0 and there are two or more documents, never all of them;
// none with val_fraction 0 or val_docs 0) and writes the files through temporary files renamed
// into place. Fails naming the path or option; when the inputs hold no document, the error says
// why, file by file.
PrepareResult prepare_corpus(const PrepareOptions& options);

}  // namespace lingua
