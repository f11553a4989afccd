#pragma once
// Validation loss on the *.val.jsonl files of each source (Lingua's eval: nll, nll_per_token,
// nll_per_char, and bits per byte). Each source's documents are tokenised (BOS/EOS as in
// training), concatenated and cut into windows of seq_len + 1 tokens; the last, partial window is
// padded with ignored targets, so every token but the first is scored exactly once (the first is
// context only). Characters and bytes are those of the scored tokens, so the per-char and per-byte
// figures stay right when max_tokens stops a source early.
#include <map>
#include <string>

#include "lingua/config/train_config.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/executor.h"

namespace lingua {

struct ValidationResult {
  double nll = 0;          // total, nats
  int64_t tokens = 0;      // scored tokens (targets)
  int64_t chars = 0;       // Unicode characters of the text the scored tokens stand for
  int64_t bytes = 0;       // UTF-8 bytes of the text the scored tokens stand for (BOS/EOS: none)
  int64_t documents = 0;   // documents read (the last one possibly scored in part)
  int64_t sequences = 0;   // windows scored (each at least one target)
  DataStats stats;         // skipped lines
  double nll_per_token() const { return tokens ? nll / tokens : 0; }
  double nll_per_char() const { return chars ? nll / chars : 0; }
  double bits_per_byte() const { return bytes ? nll / (bytes * 0.6931471805599453) : 0; }
  // The original modular Lingua's avg_seqlen: scored tokens per evaluated sequence (window); the
  // model's module rows, when it runs some, are not counted.
  double avg_seqlen() const { return sequences ? (double)tokens / sequences : 0; }
};

// Per source (by name) that has *.val.jsonl files; sources without any are left out.
// max_tokens > 0 stops a source after the batch that reaches that many scored tokens. Fails
// naming data.root_dir and the sources when no source has validation files, and naming the
// source and its files when they hold no token to score (no document, or empty ones without
// BOS/EOS): an empty validation set is an error, not a loss of 0.
std::map<std::string, ValidationResult> evaluate_validation(Executor& exec, const Tokenizer& tok,
                                                            const DataConfig& data, int64_t max_tokens);

// The checks of evaluate_validation without a model: fails as it would, the message prefixed with
// `context` (what asked for validation, e.g. the config key). Reads each source's validation files
// only up to its first tokens to score. Call before training so a run does not fail at its first
// evaluation.
void check_validation_data(const DataConfig& data, const Tokenizer& tok, const std::string& context);

}  // namespace lingua
