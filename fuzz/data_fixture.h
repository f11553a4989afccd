#pragma once
// A small data-loader setup shared by the fuzz targets that read corpora or loader states, and by
// make_seeds (which writes the seed train states for this exact setup).
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "lingua/data/loader.h"

namespace lingua_fuzz {

// Batches of 2 x 8 tokens, a shuffle buffer of 2 batches, on the caller's thread, bytes tokenizer.
inline lingua::DataConfig small_loader_config(const std::string& root_dir, std::map<std::string, double> sources) {
  lingua::DataConfig c;
  c.root_dir = root_dir;
  c.sources = std::move(sources);
  c.batch_size = 2;
  c.seq_len = 8;
  c.prefetch_size = 2;
  c.load_async = false;
  c.seed = 7;
  return c;
}

// A fixed two-source corpus under `root` (written once): the train-state target's loader reads it.
inline lingua::DataConfig fixed_corpus(const std::string& root) {
  write_file(root + "/books/part.chunk.00.jsonl",
             "{\"text\": \"Call me Ishmael.\"}\n{\"text\": \"Some years ago, never mind how long\"}\n"
             "not json\n{\"content\": \"precisely, having little or no money\"}\n\n{\"id\": 3}\n");
  write_file(root + "/books/part.chunk.01.jsonl", "{\"text\": \"in my purse, and nothing particular\"}\n");
  write_file(root + "/code/x.chunk.00.jsonl",
             "{\"text\": \"int main() { return 0; }\"}\n{\"text\": \"def f(x):\\n    return x\"}\n");
  return small_loader_config(root, {{"books", 0.75}, {"code", 0.25}});
}

// What every batch must be: [batch_size, seq_len] ids of the vocabulary, target = input shifted by one
// within a window (windows are seq_len + 1 consecutive tokens).
inline void check_batch(const lingua::Batch& b, const lingua::DataConfig& c, int n_words) {
  FUZZ_CHECK(b.batch_size == c.batch_size && b.seq_len == c.seq_len, "batch shape ", b.batch_size, "x", b.seq_len);
  const size_t n = static_cast<size_t>(c.batch_size) * c.seq_len;
  FUZZ_CHECK(b.input.size() == n && b.target.size() == n, "batch sizes ", b.input.size(), ", ", b.target.size());
  for (size_t i = 0; i < n; ++i) {
    FUZZ_CHECK(b.input[i] >= 0 && b.input[i] < n_words, "input id ", b.input[i], " outside [0, ", n_words, ")");
    FUZZ_CHECK(b.target[i] >= 0 && b.target[i] < n_words, "target id ", b.target[i], " outside [0, ", n_words, ")");
    if ((i + 1) % c.seq_len != 0) FUZZ_CHECK(b.input[i + 1] == b.target[i], "target is not input shifted at ", i);
  }
}

}  // namespace lingua_fuzz
