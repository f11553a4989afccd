#include "lingua/eval/validation.h"

#include <filesystem>

#include "lingua/core/error.h"

namespace lingua {

namespace {

std::string source_dir(const DataConfig& data, const std::string& source) {
  return (std::filesystem::path(data.root_dir) / source).string();
}

std::string joined(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

[[noreturn]] void fail_no_validation_files(const DataConfig& data, const std::string& context) {
  std::vector<std::string> names;
  for (const auto& [name, weight] : data.sources) names.push_back(name);
  fail(context, "no validation data: none of data.sources (", joined(names), ") has a *.val.jsonl file under data.root_dir ",
       data.root_dir, " (lingua prepare writes <source>/<source>.val.jsonl when val_fraction > 0)");
}

[[noreturn]] void fail_nothing_to_score(const std::string& source, const std::vector<std::string>& files,
                                        int64_t documents, const DataStats& stats, const std::string& context) {
  fail(context, "no validation data: the *.val.jsonl files of source '", source, "' (", joined(files), ") hold ",
       documents, " document", documents == 1 ? "" : "s", " and no token to score",
       documents == 0 ? "" : " (empty documents, and data.add_bos / add_eos off?)",
       stats.skipped() ? "; skipped " + stats.skipped_summary() : std::string());
}

// The tokens of a source's validation documents, in order, with the bytes and characters of text
// each one stands for; consumed from the front.
struct TokenStream {
  std::vector<int32_t> ids, bytes, chars;
  size_t head = 0;
  size_t size() const { return ids.size() - head; }
  void append(const Tokenizer& tok, const std::string& text, bool add_bos, bool add_eos) {
    std::vector<int32_t> counts;
    std::vector<int32_t> new_ids = tok.encode_with_byte_counts(text, add_bos, add_eos, &counts);
    size_t offset = 0;
    for (size_t i = 0; i < new_ids.size(); ++i) {
      ids.push_back(new_ids[i]);
      bytes.push_back(counts[i]);
      chars.push_back(static_cast<int32_t>(utf8_length(std::string_view(text).substr(offset, counts[i]))));
      offset += counts[i];
    }
  }
  void drop(size_t n) {  // advances; compacts once the dropped part is the larger one
    head += n;
    if (head > ids.size() / 2) {
      ids.erase(ids.begin(), ids.begin() + head);
      bytes.erase(bytes.begin(), bytes.begin() + head);
      chars.erase(chars.begin(), chars.begin() + head);
      head = 0;
    }
  }
};

}  // namespace

std::map<std::string, ValidationResult> evaluate_validation(Executor& exec, const Tokenizer& tok,
                                                            const DataConfig& data, int64_t max_tokens) {
  std::map<std::string, ValidationResult> out;
  const int T = data.seq_len, B = data.batch_size;
  const size_t BT = static_cast<size_t>(B) * T;
  for (auto& [source, weight] : data.sources) {
    const std::string dir = source_dir(data, source);
    if (find_validation_files(dir).empty()) continue;
    ValidationResult r;
    ValidationReader reader(dir);
    TokenStream stream;  // tokens not yet scored (the first is only context)
    std::vector<int32_t> in(BT), tg(BT);
    std::string text;
    bool done = false, more = true;
    auto score = [&](bool flush) {
      // Fill up to B windows of T+1 tokens; windows overlap by one token (the next context).
      while (!done && (stream.size() >= BT + 1 || (flush && stream.size() > 1))) {
        const int32_t* s = stream.ids.data() + stream.head;
        for (size_t i = 0; i < BT; ++i) {
          in[i] = i < stream.size() ? s[i] : 0;
          tg[i] = i + 1 < stream.size() ? s[i + 1] : -1;
        }
        LossSum l = exec.forward_loss(in.data(), tg.data(), B, T);
        r.nll += l.nll;
        r.tokens += l.tokens;
        const size_t used = std::min(stream.size() - 1, BT);
        r.sequences += (int64_t)((used + T - 1) / T);
        for (size_t i = 1; i <= used; ++i) {  // the targets just scored
          r.bytes += stream.bytes[stream.head + i];
          r.chars += stream.chars[stream.head + i];
        }
        stream.drop(used);
        if (max_tokens > 0 && r.tokens >= max_tokens) done = true;
      }
    };
    while (!done && more) {
      more = reader.next(&text, &r.stats);
      if (more) {
        stream.append(tok, text, data.add_bos, data.add_eos);
        r.documents++;
      }
      score(!more);
    }
    if (r.tokens == 0) fail_nothing_to_score(source, reader.files(), r.documents, r.stats, "");
    out[source] = r;
  }
  if (out.empty()) fail_no_validation_files(data, "");
  return out;
}

void check_validation_data(const DataConfig& data, const Tokenizer& tok, const std::string& context) {
  bool any = false;
  for (auto& [source, weight] : data.sources) {
    const std::string dir = source_dir(data, source);
    if (find_validation_files(dir).empty()) continue;
    any = true;
    ValidationReader reader(dir);
    DataStats stats;
    std::string text;
    size_t tokens = 0;
    while (tokens < 2 && reader.next(&text, &stats))  // one token of context, one to score
      tokens += tok.encode(text, data.add_bos, data.add_eos).size();
    if (tokens < 2) fail_nothing_to_score(source, reader.files(), stats.documents, stats, context);
  }
  if (!any) fail_no_validation_files(data, context);
}

}  // namespace lingua
