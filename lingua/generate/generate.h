#pragma once
// Text generation from a checkpoint: KV-cache decoding with temperature, top-k / top-p sampling,
// greedy at temperature 0, stop strings and a token limit (Lingua's generator, one prompt at a
// time; the samples of a prompt decode together, as one batch). The prompt is read whole, BOS
// first as in training; it is never truncated: a prompt that leaves no room in the model's context
// (model.max_seqlen) is an error, and generation that fills the context stops there and says so
// (StopReason::context_full).
#include <memory>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/core/philox.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/executor.h"

namespace lingua {

struct GenerateConfig {
  std::string ckpt;               // a checkpoint step directory, or a dump_dir (its newest checkpoint)
  std::string prompt;              // a single prompt (added before `prompts`)
  std::vector<std::string> prompts;
  double temperature = 1.0;       // 0: greedy
  double top_p = 1.0;             // nucleus sampling (1: off); applied after top_k
  int top_k = 0;                  // 0: off
  int max_gen_len = 256;          // new tokens per prompt
  std::vector<std::string> until; // stop strings (not included in the output)
  int64_t seed = 0;
  int num_samples = 1;            // per prompt
  int max_batch = 32;             // samples decoded together at most
  std::string tokenizer_path;     // override the checkpoint's tokenizer path (sp)
  std::string device = "auto";
  std::optional<int> premerge_max_tokens;  // null: the checkpoint's model.structured.premerge_max_tokens
  std::optional<std::vector<std::string>> modules;  // module tokens to run (null: the checkpoint's)
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (uses its newest checkpoint)");
    v("prompt", prompt, "a prompt, read exactly (trailing spaces kept): prompt=\"It was a \"");
    v("prompts", prompts, "prompts, e.g. prompts='[\"Call me\", \"The whale\"]' (a value without [ is one prompt)");
    v("temperature", temperature, "sampling temperature (0: greedy)");
    v("top_p", top_p, "nucleus sampling threshold (1: off)");
    v("top_k", top_k, "sample from the k most likely tokens (0: off)");
    v("max_gen_len", max_gen_len, "new tokens per sample");
    v("until", until, "stop strings, e.g. until='[\"\\n\\n\"]' (a value without [ is one stop string, as typed)");
    v("seed", seed, "sampling seed");
    v("num_samples", num_samples, "samples per prompt, decoded together in batches of up to max_batch (sample s of "
                                  "prompt i draws from its own random stream of seed: the batching does not change it)");
    v("max_batch", max_batch, "samples of a prompt decoded together at most (their KV cache and activations grow with it)");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
    v("modules", modules, "module tokens to run, e.g. modules=code or modules='[code, math]' (modules=[]: none, the base "
      "model; null: the checkpoint's model.enabled_modules)");
    v.choice("device", device, {"auto", "cpu", "cuda"}, "compute device (auto: cuda when a GPU is present)");
    v("premerge_max_tokens", premerge_max_tokens,
      "structured FFNs: forwards of at most this many tokens use the merged dense weights (0: never; -1: auto, "
      "as measured faster on the device; unset: the checkpoint's model.structured.premerge_max_tokens)");
  }
};

// Range checks of the sampling keys (errors name the key and the range).
void check_generate_config(const GenerateConfig& g);

struct SamplingOptions {
  double temperature = 1.0, top_p = 1.0;
  int top_k = 0, max_gen_len = 256;
  std::vector<std::string> until;
  bool add_bos = true;  // read BOS before the prompt (the checkpoint's data.add_bos)
};

// Picks the next token from logits [V] (modified in place). Deterministic for a given rng state.
int32_t sample_token(float* logits, int vocab, const SamplingOptions& opt, PhiloxStream& rng);

// Why generation stopped: max_gen_len new tokens, a stop string (until), the end-of-sequence
// token, or the model's context (model.max_seqlen) full with prompt + new tokens.
enum class StopReason { max_gen_len, until, eos, context_full };
const char* stop_reason_name(StopReason r);

struct Generation {
  std::string text;           // the continuation (not the prompt), cut before a stop string
  int prompt_tokens = 0;      // tokens of the prompt the model read, BOS included
  int generated_tokens = 0;   // new tokens sampled (an EOS that ended it not counted)
  StopReason stop = StopReason::max_gen_len;
};

// Generates a continuation of the whole of `prompt`. Throws when the prompt (with BOS) has
// model.max_seqlen tokens or more, naming both numbers.
// generate_samples: rngs.size() continuations of one prompt decoded in step (one KV cache of that
// many sequences), sample i drawing from rngs[i]; each one is what generate_text gives with that
// stream.
std::vector<Generation> generate_samples(Executor& exec, const Tokenizer& tok, const std::string& prompt,
                                         const SamplingOptions& opt, std::vector<PhiloxStream>& rngs);
Generation generate_text(Executor& exec, const Tokenizer& tok, const std::string& prompt, const SamplingOptions& opt,
                         PhiloxStream& rng);

// "note: stopped after 200 of max_gen_len 300 new tokens: prompt (56 tokens) + 200 reached
// model.max_seqlen 256" when the context ended it; "" otherwise.
std::string generation_note(const Generation& g, int max_gen_len, int max_seqlen);

}  // namespace lingua
