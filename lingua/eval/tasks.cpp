// Downstream task evaluation (tasks.h).
#include "lingua/eval/tasks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <regex>
#include <set>

#include "lingua/core/error.h"
#include "lingua/core/utf8.h"
#include "lingua/data/jsonl.h"
#include "lingua/generate/generate.h"

namespace lingua {

namespace {

struct Example {
  std::string context, text, answer;
  std::vector<std::string> choices;
  int gold = -1;
  const std::string& target() const { return gold >= 0 ? choices[(size_t)gold] : answer; }
};

struct TaskFile {
  std::vector<Example> examples;
  std::map<std::string, int64_t> skipped;  // reason -> lines
};

std::string skipped_text(const std::map<std::string, int64_t>& skipped) {
  std::string s;
  for (auto& [why, n] : skipped) s += (s.empty() ? "" : ", ") + std::to_string(n) + " " + why;
  return s;
}

// One line into an example; "" when it holds one, else why it was skipped.
std::string parse_example(const std::string& line, const std::string& type, Example* e) {
  if (!is_valid_utf8(line)) return "invalid UTF-8";
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return "not a JSON object";
  auto str = [&](const char* key, std::string* out) {
    if (!j.contains(key) || !j[key].is_string()) return false;
    *out = j[key].get<std::string>();
    return true;
  };
  if (type == "loglikelihood_rolling") return str("text", &e->text) ? "" : "no string \"text\"";
  if (!str("context", &e->context)) return "no string \"context\"";
  if (type == "generate_until") return str("answer", &e->answer) ? "" : "no string \"answer\"";
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].size() < 2) return "no list of 2+ \"choices\"";
  for (auto& c : j["choices"]) {
    if (!c.is_string()) return "a choice that is not a string";
    e->choices.push_back(c.get<std::string>());
  }
  if (!j.contains("gold") || !j["gold"].is_number_integer()) return "no integer \"gold\"";
  const int64_t g = j["gold"].get<int64_t>();
  if (g < 0 || g >= (int64_t)e->choices.size()) return "\"gold\" outside the choices";
  e->gold = (int)g;
  return "";
}

// Malformed lines are skipped and counted (and reported); a file without any example is an error.
TaskFile read_task_file(const TaskConfig& t) {
  std::ifstream in(t.path, std::ios::binary);
  LINGUA_CHECK(in.good(), "eval task '", task_name(t), "': cannot read its file '", t.path, "' (eval.tasks[].path)");
  TaskFile f;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    Example e;
    const std::string why = parse_example(line, t.type, &e);
    if (!why.empty()) {
      if (f.skipped.empty())
        std::fprintf(stderr, "lingua: %s:%lld: skipped (%s; type %s)\n", t.path.c_str(), (long long)lineno, why.c_str(),
                     t.type.c_str());
      ++f.skipped[why];
      continue;
    }
    f.examples.push_back(std::move(e));
  }
  LINGUA_CHECK(!f.examples.empty(), "eval task '", task_name(t), "': ", t.path, " holds no ", t.type, " example",
               f.skipped.empty() ? "" : " (skipped: " + skipped_text(f.skipped) + ")");
  LINGUA_CHECK(t.type == "loglikelihood_rolling" || t.num_fewshot < (int64_t)f.examples.size(), "eval task '",
               task_name(t), "': num_fewshot ", t.num_fewshot, " needs more than that many examples in ", t.path, " (",
               f.examples.size(), ")");
  return f;
}

// The few-shot prefix of example i: num_fewshot other examples, drawn from (seed, i).
std::string fewshot_prefix(const TaskConfig& t, const std::vector<Example>& ex, size_t i) {
  if (t.num_fewshot == 0) return "";
  std::mt19937_64 rng((uint64_t)t.fewshot_seed * 0x9E3779B97F4A7C15ull + i);
  std::vector<size_t> pool(ex.size());
  std::iota(pool.begin(), pool.end(), 0);
  pool.erase(pool.begin() + (ptrdiff_t)i);
  std::string s;
  for (int k = 0; k < t.num_fewshot; ++k) {
    const size_t j = k + rng() % (pool.size() - k);
    std::swap(pool[k], pool[j]);
    const Example& e = ex[pool[k]];
    s += e.context + t.target_delimiter + e.target() + t.fewshot_delimiter;
  }
  return s;
}

// A token sequence s scored on its last n_scored targets: inputs s[0..m-1], targets s[1..m].
struct ScoredSequence {
  std::vector<int32_t> tokens;
  int n_scored = 0;
};

// Sum of the scored targets' log-probabilities of each sequence (sequences of at most max_seqlen
// + 1 tokens), in order: longest first, packed into [B, T] batches of at most max_batch_tokens.
std::vector<double> score_sequences(Executor& exec, const std::vector<ScoredSequence>& seqs, int64_t max_batch_tokens) {
  std::vector<size_t> order(seqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return seqs[a].tokens.size() > seqs[b].tokens.size(); });
  std::vector<double> out(seqs.size(), 0.0);
  std::vector<int32_t> in, tg;
  std::vector<float> nll;
  for (size_t first = 0; first < order.size();) {
    const int T = (int)seqs[order[first]].tokens.size() - 1;
    const int B = (int)std::clamp<int64_t>(max_batch_tokens / std::max(T, 1), 1, (int64_t)(order.size() - first));
    in.assign((size_t)B * T, 0);
    tg.assign((size_t)B * T, -1);
    for (int b = 0; b < B; ++b) {
      const ScoredSequence& s = seqs[order[first + b]];
      const int m = (int)s.tokens.size() - 1;
      for (int t = 0; t < m; ++t) {
        in[(size_t)b * T + t] = s.tokens[t];
        if (t >= m - s.n_scored) tg[(size_t)b * T + t] = s.tokens[t + 1];
      }
    }
    nll.resize(in.size());
    exec.forward_loss(in.data(), tg.data(), B, T, nll.data());
    for (int b = 0; b < B; ++b) {
      double ll = 0;
      for (int t = 0; t < T; ++t)
        if (tg[(size_t)b * T + t] >= 0) ll -= nll[(size_t)b * T + t];
      out[order[first + b]] = ll;
    }
    first += B;
  }
  return out;
}

int prefix_token(const Tokenizer& tok, bool add_bos) {
  const int p = add_bos ? tok.bos_id() : tok.eos_id();
  LINGUA_CHECK(p >= 0, "task evaluation: the tokenizer has no ", add_bos ? "BOS" : "EOS",
               " token to predict the first token from");
  return p;
}

double mean_stderr(const std::vector<double>& x) {
  if (x.size() < 2) return 0;
  const double m = std::accumulate(x.begin(), x.end(), 0.0) / x.size();
  double v = 0;
  for (double a : x) v += (a - m) * (a - m);
  return std::sqrt(v / (x.size() - 1) / x.size());
}

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n\f\v");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n\f\v") - b + 1);
}

TaskMetrics multiple_choice(Executor& exec, const Tokenizer& tok, const TaskConfig& t, const std::vector<Example>& ex,
                            bool add_bos, int64_t max_batch_tokens) {
  std::vector<LoglikelihoodRequest> reqs;
  for (size_t i = 0; i < ex.size(); ++i) {
    const std::string ctx = fewshot_prefix(t, ex, i) + ex[i].context;
    for (const std::string& c : ex[i].choices) reqs.push_back({ctx, t.target_delimiter + c});
  }
  const std::vector<double> ll = loglikelihoods(exec, tok, reqs, add_bos, max_batch_tokens);
  std::vector<double> acc, acc_norm;
  size_t r = 0;
  for (const Example& e : ex) {
    size_t best = 0, best_norm = 0;
    double top = -INFINITY, top_norm = -INFINITY;
    for (size_t c = 0; c < e.choices.size(); ++c, ++r) {
      const double norm = ll[r] / (double)std::max<size_t>(1, utf8_length(e.choices[c]));
      if (ll[r] > top) top = ll[r], best = c;
      if (norm > top_norm) top_norm = norm, best_norm = c;
    }
    acc.push_back(best == (size_t)e.gold);
    acc_norm.push_back(best_norm == (size_t)e.gold);
  }
  const double n = (double)ex.size();
  return {{"acc", std::accumulate(acc.begin(), acc.end(), 0.0) / n},
          {"acc_stderr", mean_stderr(acc)},
          {"acc_norm", std::accumulate(acc_norm.begin(), acc_norm.end(), 0.0) / n},
          {"acc_norm_stderr", mean_stderr(acc_norm)}};
}

TaskMetrics rolling(Executor& exec, const Tokenizer& tok, const std::vector<Example>& ex, bool add_bos,
                    int64_t max_batch_tokens) {
  const int L = exec.model().dims().max_seqlen;
  const int32_t prefix = prefix_token(tok, add_bos);
  std::vector<ScoredSequence> seqs;
  double words = 0, bytes = 0;
  for (const Example& e : ex) {
    std::vector<int32_t> full = tok.encode(e.text, false, false);
    full.insert(full.begin(), prefix);
    const int n = (int)full.size() - 1;  // targets full[1..n]
    for (int end = 0; end < n;) {        // a window predicts full[end+1 .. end+pred]
      const int pred = std::min(n - end, L), last = end + pred, start = std::max(0, last - L);
      seqs.push_back({std::vector<int32_t>(full.begin() + start, full.begin() + last + 1), pred});
      end = last;
    }
    bytes += (double)e.text.size();
    // Words as lm-eval counts them: the pieces of re.split(r"\s+", text), empty edge pieces included.
    words += 1;
    for (size_t i = 0; i < e.text.size();) {
      if (std::isspace((unsigned char)e.text[i])) {
        ++words;
        while (i < e.text.size() && std::isspace((unsigned char)e.text[i])) ++i;
      } else {
        ++i;
      }
    }
  }
  const std::vector<double> ll = score_sequences(exec, seqs, max_batch_tokens);
  const double total = std::accumulate(ll.begin(), ll.end(), 0.0);
  return {{"loglikelihood", total},
          {"word_perplexity", std::exp(-total / std::max(words, 1.0))},
          {"byte_perplexity", std::exp(-total / std::max(bytes, 1.0))},
          {"bits_per_byte", -total / std::max(bytes, 1.0) / std::log(2.0)}};
}

TaskMetrics generate_until(Executor& exec, const Tokenizer& tok, const TaskConfig& t, const std::vector<Example>& ex,
                           bool add_bos) {
  std::regex re;
  if (!t.answer_regex.empty()) {
    try {
      re = std::regex(t.answer_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& err) {
      fail("eval task '", task_name(t), "': answer_regex '", t.answer_regex, "' is not a valid regex (", err.what(), ")");
    }
  }
  SamplingOptions opt;
  opt.temperature = 0;
  opt.max_gen_len = t.max_gen_toks;
  opt.until = t.until;
  opt.add_bos = add_bos;
  PhiloxStream rng(0, 0);
  std::vector<double> em;
  for (size_t i = 0; i < ex.size(); ++i) {
    const Generation g = generate_text(exec, tok, fewshot_prefix(t, ex, i) + ex[i].context, opt, rng);
    std::string pred = g.text;
    if (!t.answer_regex.empty()) {
      std::smatch m;
      pred = std::regex_search(pred, m, re) ? (m.size() > 1 && m[1].matched ? m[1].str() : m[0].str()) : "[invalid]";
    }
    em.push_back(strip(pred) == strip(ex[i].answer));
  }
  return {{"exact_match", std::accumulate(em.begin(), em.end(), 0.0) / (double)em.size()},
          {"exact_match_stderr", mean_stderr(em)}};
}

}  // namespace

std::string task_name(const TaskConfig& t) {
  if (!t.name.empty()) return t.name;
  std::string file = std::filesystem::path(t.path).filename().string();
  if (file.size() > 6 && file.ends_with(".jsonl")) file.resize(file.size() - 6);
  return file;
}

std::vector<double> loglikelihoods(Executor& exec, const Tokenizer& tok, const std::vector<LoglikelihoodRequest>& reqs,
                                   bool add_bos, int64_t max_batch_tokens) {
  const int L = exec.model().dims().max_seqlen;
  std::vector<ScoredSequence> seqs;
  for (const LoglikelihoodRequest& r : reqs) {
    std::string context = r.context, continuation = r.continuation;
    const size_t spaces = context.size() - (context.find_last_not_of(' ') + 1);  // (npos + 1 == 0: all spaces)
    if (spaces > 0) {
      continuation = context.substr(context.size() - spaces) + continuation;
      context.resize(context.size() - spaces);
    }
    std::vector<int32_t> ctx, cont;
    if (context.empty()) {
      ctx = {prefix_token(tok, add_bos)};
      cont = tok.encode(continuation, false, false);
    } else {
      ctx = tok.encode(context, add_bos, false);
      const std::vector<int32_t> whole = tok.encode(context + continuation, add_bos, false);
      cont.assign(whole.begin() + (ptrdiff_t)std::min(ctx.size(), whole.size()), whole.end());
      if (!add_bos && ctx.empty()) ctx = {prefix_token(tok, add_bos)};
    }
    LINGUA_CHECK(!cont.empty(), "task evaluation: the continuation '", r.continuation, "' has no token of its own");
    LINGUA_CHECK((int)cont.size() <= L, "task evaluation: a continuation of ", cont.size(),
                 " tokens does not fit the model's context (model.max_seqlen ", L, ")");
    ScoredSequence s;
    s.tokens = ctx;
    s.tokens.insert(s.tokens.end(), cont.begin(), cont.end());
    if ((int)s.tokens.size() > L + 1) s.tokens.erase(s.tokens.begin(), s.tokens.end() - (L + 1));  // keep the last
    s.n_scored = (int)cont.size();
    seqs.push_back(std::move(s));
  }
  return score_sequences(exec, seqs, max_batch_tokens);
}

TaskMetrics evaluate_task(Executor& exec, const Tokenizer& tok, const TaskConfig& t, bool add_bos,
                          int64_t max_batch_tokens) {
  TaskFile f = read_task_file(t);
  std::vector<Example>& ex = f.examples;
  if (t.limit > 0 && (int64_t)ex.size() > t.limit) ex.resize((size_t)t.limit);
  TaskMetrics m = t.type == "multiple_choice"         ? multiple_choice(exec, tok, t, ex, add_bos, max_batch_tokens)
                  : t.type == "loglikelihood_rolling" ? rolling(exec, tok, ex, add_bos, max_batch_tokens)
                                                      : generate_until(exec, tok, t, ex, add_bos);
  m["examples"] = (double)ex.size();
  int64_t skipped = 0;
  for (auto& [why, n] : f.skipped) skipped += n;
  m["skipped_lines"] = (double)skipped;
  return m;
}

void check_tasks(const std::vector<TaskConfig>& tasks, const std::string& context) {
  std::set<std::string> names;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const TaskConfig& t = tasks[i];
    const std::string key = context + "[" + std::to_string(i) + "]";
    LINGUA_CHECK(!t.path.empty(), "config key '", key, ".path' is required (the task's JSONL file)");
    LINGUA_CHECK(t.num_fewshot >= 0, "config key '", key, ".num_fewshot' must be >= 0, got ", t.num_fewshot);
    LINGUA_CHECK(t.limit >= 0, "config key '", key, ".limit' must be >= 0 (0: all), got ", t.limit);
    LINGUA_CHECK(t.max_gen_toks >= 1, "config key '", key, ".max_gen_toks' must be >= 1, got ", t.max_gen_toks);
    LINGUA_CHECK(names.insert(task_name(t)).second, "config key '", key, "': a second task named '", task_name(t),
                 "' (give each a distinct name)");
    read_task_file(t);
  }
}

}  // namespace lingua
