#include <gtest/gtest.h>

#include <set>

#include <algorithm>
#include <string>
#include <vector>

#include "lingua/config/config.h"
#include "lingua/exec/testing.h"
#include "lingua/generate/generate.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

constexpr int kContext = 24;

// A small byte-level model with its initial (random) weights: greedy decoding is deterministic
// and depends on every token it reads.
ModelConfig tiny() {
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.multiple_of = 16;
  c.max_seqlen = kContext;
  c.seed = 11;
  c.init_base_std = 0.5;  // peaked logits: the argmax depends on the context
  return c;
}

struct Fixture {
  BytesTokenizer tok;
  ModelRun run{tiny(), resolve_dims(tiny(), 258)};
};

SamplingOptions greedy(int max_gen_len) {
  SamplingOptions o;
  o.temperature = 0;
  o.max_gen_len = max_gen_len;
  return o;
}

// Greedy continuation by full forwards over `ids` (no cache), until the context is full, EOS or n.
std::vector<int32_t> greedy_by_full_forwards(Executor& exec, std::vector<int32_t> ids, int n, int eos) {
  const int V = exec.model().dims().vocab;
  std::vector<int32_t> out;
  while ((int)out.size() < n && (int)ids.size() < kContext) {
    std::vector<float> logits(ids.size() * V);
    exec.forward_logits(ids.data(), (int)ids.size(), logits.data());
    const float* last = logits.data() + (ids.size() - 1) * V;
    const int32_t next = (int32_t)(std::max_element(last, last + V) - last);
    if (next == eos) break;
    ids.push_back(next);
    out.push_back(next);
  }
  return out;
}

}  // namespace

TEST(Generate, PromptLongerThanTheContextIsAnErrorNamingBothNumbers) {
  Fixture f;
  PhiloxStream rng(1, 0);
  const std::string prompt(30, 'a');  // 31 tokens with BOS, context 24
  try {
    generate_text(f.run.exec, f.tok, prompt, greedy(300), rng);
    FAIL() << "a prompt over the context was read (truncated?)";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("31 tokens (BOS included)"), std::string::npos) << m;
    EXPECT_NE(m.find("model.max_seqlen, is 24"), std::string::npos) << m;
  }
  // Exactly full: no room for a new token either.
  EXPECT_THROW(generate_text(f.run.exec, f.tok, std::string(kContext - 1, 'a'), greedy(5), rng), Error);
  // One short of full: one new token, then the context is full.
  const Generation g = generate_text(f.run.exec, f.tok, std::string(kContext - 2, 'a'), greedy(5), rng);
  EXPECT_EQ(g.prompt_tokens, kContext - 1);
  EXPECT_EQ(g.generated_tokens, 1);
  EXPECT_EQ(g.stop, StopReason::context_full);
}

TEST(Generate, TheWholePromptIsReadAfterBos) {
  Fixture f;
  const std::string prompt = "It was the best of times";  // 24 bytes + BOS = 25 > context: shorten
  const std::string p = prompt.substr(0, 14);
  std::vector<int32_t> with_bos = f.tok.encode(p, true, false), without = f.tok.encode(p, false, false);
  ASSERT_EQ(with_bos.front(), f.tok.bos_id());
  const std::vector<int32_t> expect = greedy_by_full_forwards(f.run.exec, with_bos, 3, f.tok.eos_id());
  // The check can fail: the model's output depends on BOS and on the start of the prompt.
  ASSERT_NE(expect, greedy_by_full_forwards(f.run.exec, without, 3, f.tok.eos_id()));
  ASSERT_NE(expect, greedy_by_full_forwards(f.run.exec, f.tok.encode(p.substr(8), true, false), 3, f.tok.eos_id()));
  PhiloxStream rng(1, 0);
  // max_gen_len over the context (the case that used to keep only the prompt's last token).
  SamplingOptions o = greedy(300);
  Generation g = generate_text(f.run.exec, f.tok, p, o, rng);
  EXPECT_EQ(g.prompt_tokens, (int)with_bos.size());
  ASSERT_GE(g.text.size(), 1u);
  EXPECT_EQ(f.tok.encode(g.text, false, false).front(), expect.front()) << g.text;
  // Without BOS (a checkpoint trained with data.add_bos false) the prompt is read as it is.
  o.add_bos = false;
  g = generate_text(f.run.exec, f.tok, p, o, rng);
  EXPECT_EQ(g.prompt_tokens, (int)without.size());
}

TEST(Generate, LongMaxGenLenStopsAtTheContextAndSaysSo) {
  Fixture f;
  PhiloxStream rng(5, 0);
  const std::string prompt = "the sea";  // 8 tokens with BOS
  SamplingOptions o = greedy(300);
  const Generation g = generate_text(f.run.exec, f.tok, prompt, o, rng);
  const std::vector<int32_t> expect =
      greedy_by_full_forwards(f.run.exec, f.tok.encode(prompt, true, false), 300, f.tok.eos_id());
  EXPECT_EQ(g.prompt_tokens, 8);
  EXPECT_EQ(g.text, f.tok.decode(expect));  // KV-cache decoding equals full forwards to the end
  ASSERT_EQ((int)expect.size(), kContext - 8);  // this model emits no EOS here
  EXPECT_EQ(g.stop, StopReason::context_full);
  EXPECT_EQ(g.generated_tokens, kContext - 8);
  EXPECT_EQ(generation_note(g, 300, kContext),
            "note: stopped after 16 of max_gen_len 300 new tokens: prompt (8 tokens) + 16 reached model.max_seqlen 24");
  // Within the context: max_gen_len ends it, no note.
  const Generation h = generate_text(f.run.exec, f.tok, prompt, greedy(4), rng);
  EXPECT_EQ(h.generated_tokens, 4);
  EXPECT_EQ(h.stop, StopReason::max_gen_len);
  EXPECT_EQ(generation_note(h, 4, kContext), "");
  EXPECT_STREQ(stop_reason_name(StopReason::context_full), "context_full");
}

TEST(Generate, StopStringsCutTheTextAndAreReported) {
  Fixture f;
  PhiloxStream rng(5, 0);
  const Generation all = generate_text(f.run.exec, f.tok, "the sea", greedy(10), rng);
  ASSERT_GE(all.text.size(), 3u);
  SamplingOptions o = greedy(10);
  o.until = {all.text.substr(1, 2)};
  const Generation cut = generate_text(f.run.exec, f.tok, "the sea", o, rng);
  EXPECT_EQ(cut.stop, StopReason::until);
  EXPECT_EQ(cut.text, all.text.substr(0, 1));
}

TEST(Generate, TrailingSpacesOfACommandLinePromptAreKept) {
  const GenerateConfig g = parse_config<GenerateConfig>({"prompt=It was a dark night, and the sea "});
  EXPECT_EQ(g.prompt, "It was a dark night, and the sea ");
  EXPECT_EQ(parse_config<GenerateConfig>({"until=[\"\\n\\n\", \" \"]"}).until,
            (std::vector<std::string>{"\n\n", " "}));
  EXPECT_EQ(parse_config<GenerateConfig>({"prompts=[\"a \", \"b\"]"}).prompts, (std::vector<std::string>{"a ", "b"}));
  // End to end: the model reads the space (the bytes tokenizer: one token per byte, BOS first).
  ModelConfig c = tiny();
  c.max_seqlen = 64;
  BytesTokenizer tok;
  ModelRun run(c, resolve_dims(c, 258));
  PhiloxStream rng(1, 0);
  const Generation out = generate_text(run.exec, tok, g.prompt, greedy(1), rng);
  EXPECT_EQ(out.prompt_tokens, 1 + (int)std::string("It was a dark night, and the sea ").size());
}

TEST(Generate, SamplingKeysAreRangeChecked) {
  auto error_of = [](const std::vector<std::string>& args) -> std::string {
    try {
      check_generate_config(parse_config<GenerateConfig>(args));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of({}), "");
  EXPECT_NE(error_of({"num_samples=0"}).find("'num_samples' must be >= 1"), std::string::npos);
  EXPECT_NE(error_of({"max_batch=0"}).find("'max_batch' must be >= 1"), std::string::npos);
  EXPECT_NE(error_of({"top_p=0"}).find("'top_p' must be in (0, 1]"), std::string::npos);
  EXPECT_NE(error_of({"top_p=1.5"}).find("'top_p'"), std::string::npos);
  EXPECT_NE(error_of({"temperature=-1"}).find("'temperature' must be >= 0"), std::string::npos);
  EXPECT_NE(error_of({"max_gen_len=0"}).find("'max_gen_len' must be >= 1"), std::string::npos);
  EXPECT_NE(error_of({"top_k=-2"}).find("'top_k'"), std::string::npos);
  // Parsing already refuses NaN and inf.
  EXPECT_THROW(parse_config<GenerateConfig>({"temperature=.nan"}), Error);
}

// Samples of one prompt decoded together (generate_samples) are each what generate_text gives
// with the same stream, though they stop at different steps (a stop string or the token limit).
TEST(Generate, SamplesDecodedTogetherAreEachAsAlone) {
  Fixture f;
  SamplingOptions o;
  o.temperature = 1.0;
  o.max_gen_len = 12;
  for (char c = 'a'; c <= 'z'; ++c) o.until.push_back(std::string(1, c));  // (near-uniform bytes: ~1 in 10 stops)
  const int B = 6;
  std::vector<PhiloxStream> rngs;
  for (int b = 0; b < B; ++b) rngs.emplace_back(7, 100 + b);
  std::vector<PhiloxStream> start = rngs;
  const std::vector<Generation> together = generate_samples(f.run.exec, f.tok, "the sea", o, rngs);
  ASSERT_EQ((int)together.size(), B);
  std::set<std::string> texts;
  std::set<int> lengths;
  for (int b = 0; b < B; ++b) {
    const Generation alone = generate_text(f.run.exec, f.tok, "the sea", o, start[b]);
    EXPECT_EQ(together[b].text, alone.text) << b;
    EXPECT_EQ(together[b].stop, alone.stop) << b;
    EXPECT_EQ(together[b].generated_tokens, alone.generated_tokens) << b;
    EXPECT_EQ(together[b].prompt_tokens, alone.prompt_tokens) << b;
    EXPECT_EQ(rngs[b].counter, start[b].counter) << b;  // the same draws
    texts.insert(together[b].text);
    lengths.insert(together[b].generated_tokens);
  }
  EXPECT_GT(texts.size(), 1u) << "the streams give different samples";
  EXPECT_GT(lengths.size(), 1u) << "the samples stop at different steps";
}
