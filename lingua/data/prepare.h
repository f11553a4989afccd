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
  // Input files, by extension: .txt is split into paragraphs at blank lines, consecutive paragraphs
  // of one file grouped into documents of at least min_doc_chars characters (the file's last
  // document may be shorter); .jsonl holds one document per line under "text" or "content"
  // (malformed lines are skipped and counted, as in the loader).
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

struct PrepareResult {
  std::string source_dir;
  std::vector<std::string> chunk_files;  // in order
  std::string val_file;                  // written even when it holds no document
  int64_t train_docs = 0, val_docs = 0;
  int64_t train_chars = 0, val_chars = 0;  // code points
  int64_t train_bytes = 0, val_bytes = 0;
  int64_t invalid_utf8_replaced = 0;  // ill-formed byte sequences of .txt input written as U+FFFD
  DataStats skipped;                  // malformed .jsonl input lines, by reason (documents: read)
};

// Reads the inputs, shuffles the documents, sets aside the validation documents (by default 1%,
// at least one when there are two or more documents, never all of them) and writes the files
// through temporary files renamed into place. Fails naming the path or option.
PrepareResult prepare_corpus(const PrepareOptions& options);

}  // namespace lingua
