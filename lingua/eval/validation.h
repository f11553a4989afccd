#pragma once
// Validation loss on the *.val.jsonl files of each source (Lingua's eval: nll, nll_per_token,
// nll_per_char, and bits per byte). Each source's documents are tokenised (BOS/EOS as in
// training), concatenated and cut into windows of seq_len + 1 tokens; the last, partial window is
// padded with ignored targets, so every token is scored exactly once.
#include <map>
#include <string>

#include "lingua/config/train_config.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/executor.h"

namespace lingua {

struct ValidationResult {
  double nll = 0;          // total, nats
  int64_t tokens = 0;      // scored tokens
  int64_t chars = 0;       // Unicode characters of the documents
  int64_t bytes = 0;       // UTF-8 bytes of the documents
  int64_t documents = 0;
  DataStats stats;         // skipped lines
  double nll_per_token() const { return tokens ? nll / tokens : 0; }
  double nll_per_char() const { return chars ? nll / chars : 0; }
  double bits_per_byte() const { return bytes ? nll / (bytes * 0.6931471805599453) : 0; }
};

// Per source (by name); max_tokens > 0 stops a source after that many scored tokens.
std::map<std::string, ValidationResult> evaluate_validation(Executor& exec, const Tokenizer& tok,
                                                            const DataConfig& data, int64_t max_tokens);

}  // namespace lingua
