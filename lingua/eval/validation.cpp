#include "lingua/eval/validation.h"

#include <filesystem>

namespace lingua {

std::map<std::string, ValidationResult> evaluate_validation(Executor& exec, const Tokenizer& tok,
                                                            const DataConfig& data, int64_t max_tokens) {
  std::map<std::string, ValidationResult> out;
  const int T = data.seq_len, B = data.batch_size;
  for (auto& [source, weight] : data.sources) {
    std::string dir = (std::filesystem::path(data.root_dir) / source).string();
    if (find_validation_files(dir).empty()) continue;
    ValidationResult r;
    ValidationReader reader(dir);
    std::vector<int32_t> stream;  // tokens not yet scored (the first is only context)
    std::vector<int32_t> in((size_t)B * T), tg((size_t)B * T);
    std::string text;
    bool done = false, more = true;
    auto score = [&](bool flush) {
      // Fill up to B windows of T+1 tokens; windows overlap by one token (the next context).
      while (!done && (stream.size() >= (size_t)B * T + 1 || (flush && stream.size() > 1))) {
        for (int b = 0; b < B; ++b)
          for (int t = 0; t < T; ++t) {
            size_t i = (size_t)b * T + t;
            in[i] = i < stream.size() ? stream[i] : 0;
            tg[i] = i + 1 < stream.size() ? stream[i + 1] : -1;
          }
        LossSum l = exec.forward_loss(in.data(), tg.data(), B, T);
        r.nll += l.nll;
        r.tokens += l.tokens;
        size_t used = std::min(stream.size() - 1, (size_t)B * T);
        stream.erase(stream.begin(), stream.begin() + used);
        if (max_tokens > 0 && r.tokens >= max_tokens) done = true;
      }
    };
    while (!done && more) {
      more = reader.next(&text, &r.stats);
      if (more) {
        auto ids = tok.encode(text, data.add_bos, data.add_eos);
        stream.insert(stream.end(), ids.begin(), ids.end());
        r.documents++;
        r.bytes += (int64_t)text.size();
        r.chars += utf8_length(text);
      }
      score(!more);
    }
    out[source] = r;
  }
  return out;
}

}  // namespace lingua
