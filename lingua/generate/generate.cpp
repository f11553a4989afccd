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

std::string generate_text(Executor& exec, const Tokenizer& tok, const std::string& prompt,
                          const SamplingOptions& opt, PhiloxStream& rng) {
  const ModelDims& d = exec.model().dims();
  std::vector<int32_t> ids = tok.encode(prompt, true, false);
  // Keep the end of a prompt that leaves no room to generate.
  int room = std::max(1, d.max_seqlen - opt.max_gen_len);
  if ((int)ids.size() > room) ids.erase(ids.begin(), ids.end() - room);
  KVCache cache = exec.make_cache(d.max_seqlen);
  std::vector<float> logits(d.vocab);
  exec.forward_decode(ids.data(), (int)ids.size(), cache, logits.data());
  std::vector<int32_t> out;
  std::string text;
  for (int i = 0; i < opt.max_gen_len && cache.next_position() < d.max_seqlen; ++i) {
    int32_t next = sample_token(logits.data(), d.vocab, opt, rng);
    if (next == tok.eos_id()) break;
    out.push_back(next);
    text = tok.decode(out);
    for (auto& s : opt.until) {
      size_t at = s.empty() ? std::string::npos : text.find(s);
      if (at != std::string::npos) return text.substr(0, at);
    }
    if (cache.next_position() >= d.max_seqlen) break;
    exec.forward_decode(&next, 1, cache, logits.data());
  }
  return text;
}

}  // namespace lingua
