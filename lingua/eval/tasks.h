#pragma once
// Downstream task evaluation without an external harness, in lm-eval-harness's request types,
// from local JSONL files (nothing is downloaded). One example per line:
//   multiple_choice         {"context": "...", "choices": ["...", ...], "gold": 1}
//   loglikelihood_rolling   {"text": "..."}
//   generate_until          {"context": "...", "answer": "..."}
// Few-shot prompts (num_fewshot > 0) put examples drawn without replacement from the same file
// (never the example itself; seeded by fewshot_seed and the example's index) before the context:
//   ex1.context + target_delimiter + ex1.target + fewshot_delimiter + ... + context
// where an example's target is its gold choice or its answer.
//
// Scoring follows lm-eval:
//  - loglikelihood(context, continuation): context and context + continuation are tokenised (BOS
//    first as in training when add_bos), the continuation's tokens are those of the whole after
//    the context's (trailing spaces of the context move to the continuation), the input keeps the
//    last max_seqlen tokens, and the score is the sum of the continuation tokens' log-probabilities.
//  - multiple_choice: acc (argmax of the choices' loglikelihoods of target_delimiter + choice is
//    gold) and acc_norm (the same with each loglikelihood divided by the choice's length in
//    characters), with their standard errors.
//  - loglikelihood_rolling: every token of each document scored once, in windows of max_seqlen
//    predictions, each window's input the max_seqlen tokens before its last target (the first
//    predicted from BOS, or EOS without add_bos); word_perplexity, byte_perplexity, bits_per_byte.
//  - generate_until: greedy decoding until a stop string or max_gen_toks tokens; exact_match of the
//    stripped output (or the first capture group of answer_regex in it) with the stripped answer.
// Requests are batched: sorted by length and packed into [B, T] forwards of at most
// data.batch_size x data.seq_len tokens.
#include <map>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/executor.h"

namespace lingua {

// One scored example set: metric name -> value ("acc", "acc_norm", "acc_stderr", ...), plus
// "examples" (how many were scored).
using TaskMetrics = std::map<std::string, double>;

// Reads and checks the task file (an error names the file, the line and the field) and scores it.
TaskMetrics evaluate_task(Executor& exec, const Tokenizer& tok, const TaskConfig& task, bool add_bos,
                          int64_t max_batch_tokens);

// The name a task's metrics go under: task.name, else the file's name without .jsonl.
std::string task_name(const TaskConfig& task);

// Checks every task of the list without a model (files readable, fields present, names unique):
// call before training so a run does not fail at its first evaluation.
void check_tasks(const std::vector<TaskConfig>& tasks, const std::string& context);

// Sum of log p(continuation | context) for each request: the loglikelihood of the continuation's
// tokens after the context's (lm-eval's tokenisation, above). Batched; results in request order.
struct LoglikelihoodRequest {
  std::string context, continuation;
};
std::vector<double> loglikelihoods(Executor& exec, const Tokenizer& tok, const std::vector<LoglikelihoodRequest>& reqs,
                                   bool add_bos, int64_t max_batch_tokens);

}  // namespace lingua
