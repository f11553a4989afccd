#include "lingua/generate/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lingua {

int32_t sample_token(float* logits, int V, const SamplingOptions& opt, PhiloxStream& rng) {
  if (opt.temperature <= 0) return (int32_t)(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  // Sorted by logit, descending; ties by id so the order is deterministic.
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  int keep = V;
  if (opt.top_k > 0) keep = std::min(keep, opt.top_k);
  double mx = logits[idx[0]];
  std::vector<double> p(keep);
  double z = 0;
  for (int i = 0; i < keep; ++i) z += p[i] = std::exp((logits[idx[i]] - mx) / opt.temperature);
  if (opt.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p.
    double c = 0;
    int n = 0;
    while (n < keep) {
      c += p[n++] / z;
      if (c >= opt.top_p) break;
    }
    keep = n;
    z = 0;
    for (int i = 0; i < keep; ++i) z += p[i];
  }
  double u = rng.uniform() * z, c = 0;
  for (int i = 0; i < keep; ++i) {
    c += p[i];
    if (u < c) return idx[i];
  }
  return idx[keep - 1];
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::max_gen_len: return "max_gen_len";
    case StopReason::until: return "until";
    case StopReason::eos: return "eos";
    case StopReason::context_full: return "context_full";
  }
  return "?";
}

void check_generate_config(const GenerateConfig& g) {
  LINGUA_CHECK(g.temperature >= 0, "config key 'temperature' must be >= 0 (0: greedy), got ", g.temperature);
  LINGUA_CHECK(g.top_p > 0 && g.top_p <= 1, "config key 'top_p' must be in (0, 1], got ", g.top_p);
  LINGUA_CHECK(g.top_k >= 0, "config key 'top_k' must be >= 0 (0: off), got ", g.top_k);
  LINGUA_CHECK(g.max_gen_len >= 1, "config key 'max_gen_len' must be >= 1, got ", g.max_gen_len);
  LINGUA_CHECK(g.num_samples >= 1, "config key 'num_samples' must be >= 1, got ", g.num_samples);
  LINGUA_CHECK(g.max_batch >= 1, "config key 'max_batch' must be >= 1, got ", g.max_batch);
  LINGUA_CHECK(g.premerge_max_tokens.value_or(0) >= -1,
               "config key 'premerge_max_tokens' must be >= 0 (or -1: auto), got ", g.premerge_max_tokens.value_or(0));
}

std::vector<Generation> generate_samples(Executor& exec, const Tokenizer& tok, const std::string& prompt,
                                         const SamplingOptions& opt, std::vector<PhiloxStream>& rngs) {
  const ModelDims& d = exec.model().dims();
  const int B = (int)rngs.size(), V = d.vocab;
  LINGUA_CHECK(B >= 1, "generation: no samples asked for");
  const bool bos = opt.add_bos && tok.bos_id() >= 0;
  const std::vector<int32_t> ids = tok.encode(prompt, bos, false);
  LINGUA_CHECK(!ids.empty(), "the prompt is empty and the model reads no BOS before it (data.add_bos is false)");
  LINGUA_CHECK((int64_t)ids.size() < d.max_seqlen, "the prompt is ", ids.size(), " tokens", bos ? " (BOS included)" : "",
               " but the model's context, model.max_seqlen, is ", d.max_seqlen,
               " tokens: it must leave room for a new token, so at most ", d.max_seqlen - 1, " prompt tokens");
  const int P = (int)ids.size();
  std::vector<Generation> gens(B);
  for (Generation& g : gens) g.prompt_tokens = P;
  // The samples decode in step: every one reads the prompt, then one token per step; a finished
  // sample's rows keep going (its last token again) until every sample has finished.
  const int max_len = (int)std::min<int64_t>(d.max_seqlen, (int64_t)P + opt.max_gen_len);
  KVCache cache = exec.make_cache(max_len, B);
  std::vector<int32_t> in((size_t)B * P);
  for (int b = 0; b < B; ++b) std::copy(ids.begin(), ids.end(), in.begin() + (size_t)b * P);
  std::vector<float> logits((size_t)B * V);
  exec.forward_decode(in.data(), B, P, cache, logits.data());
  std::vector<std::vector<int32_t>> out(B);
  std::vector<bool> done(B, false);
  std::vector<int32_t> next(B);
  int running = B;
  auto finish = [&](int b, StopReason r) {
    gens[b].stop = r;
    gens[b].generated_tokens = (int)out[b].size();
    done[b] = true;
    --running;
  };
  for (int step = 0;; ++step) {
    for (int b = 0; b < B; ++b) {  // the limits first: a sample that stops here needs no logits
      if (done[b]) continue;
      if ((int)out[b].size() >= opt.max_gen_len)
        finish(b, StopReason::max_gen_len);
      else if (P + (int)out[b].size() >= d.max_seqlen)
        finish(b, StopReason::context_full);
    }
    if (running == 0) break;
    if (step > 0) {
      for (int b = 0; b < B; ++b) next[b] = out[b].empty() ? ids.back() : out[b].back();
      exec.forward_decode(next.data(), B, 1, cache, logits.data());
    }
    for (int b = 0; b < B; ++b) {
      if (done[b]) continue;
      const int32_t t = sample_token(logits.data() + (size_t)b * V, V, opt, rngs[b]);
      if (t == tok.eos_id()) {
        finish(b, StopReason::eos);
        continue;
      }
      out[b].push_back(t);
      Generation& g = gens[b];
      g.text = tok.decode(out[b]);
      for (auto& s : opt.until) {
        const size_t at = s.empty() ? std::string::npos : g.text.find(s);
        if (at == std::string::npos) continue;
        g.text.resize(at);
        finish(b, StopReason::until);
        break;
      }
    }
    if (running == 0) break;
  }
  return gens;
}

Generation generate_text(Executor& exec, const Tokenizer& tok, const std::string& prompt, const SamplingOptions& opt,
                         PhiloxStream& rng) {
  std::vector<PhiloxStream> one{rng};
  Generation g = generate_samples(exec, tok, prompt, opt, one).front();
  rng = one.front();
  return g;
}

std::string generation_note(const Generation& g, int max_gen_len, int max_seqlen) {
  if (g.stop != StopReason::context_full) return "";
  return "note: stopped after " + std::to_string(g.generated_tokens) + " of max_gen_len " +
         std::to_string(max_gen_len) + " new tokens: prompt (" + std::to_string(g.prompt_tokens) + " tokens) + " +
         std::to_string(g.generated_tokens) + " reached model.max_seqlen " + std::to_string(max_seqlen);
}

}  // namespace lingua
