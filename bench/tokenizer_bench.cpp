// Tokenizer encoding throughput (issue 14): a text file cut into documents (paragraphs), encoded
// by one thread and by N threads (each its share of the documents), as the data loader does.
// Prints one JSON line per thread count: MB/s of UTF-8 input, tokens/s.
//   lingua_tokenizer_bench name=tiktoken path=data/npm/tiktoken/encoders/cl100k_base.json
//                          file=moby_dick.txt [threads=1,4,16] [repeat=5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lingua/data/tokenizer.h"

using namespace lingua;

int main(int argc, char** argv) {
  std::map<std::string, std::string> arg = {{"name", "tiktoken"}, {"path", ""}, {"file", ""}, {"threads", "1"},
                                            {"repeat", "5"}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (eq == std::string::npos || !arg.count(a.substr(0, eq))) {
      std::fprintf(stderr, "lingua_tokenizer_bench: unknown argument '%s'; valid: name path file threads repeat\n",
                   a.c_str());
      return 2;
    }
    arg[a.substr(0, eq)] = a.substr(eq + 1);
  }
  try {
    std::unique_ptr<Tokenizer> tok = make_tokenizer(TokenizerConfig{arg["name"], arg["path"]});
    std::ifstream f(arg["file"], std::ios::binary);
    if (!f) throw std::runtime_error("cannot read file= '" + arg["file"] + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string text = ss.str();
    std::vector<std::string> docs;  // paragraphs
    for (size_t p = 0; p < text.size();) {
      size_t q = text.find("\n\n", p);
      q = q == std::string::npos ? text.size() : q + 2;
      docs.push_back(text.substr(p, q - p));
      p = q;
    }
    const int repeat = std::stoi(arg["repeat"]);
    std::stringstream ts(arg["threads"]);
    for (std::string t; std::getline(ts, t, ',');) {
      const int n = std::stoi(t);
      std::vector<double> secs;
      size_t tokens = 0;
      for (int r = 0; r < repeat; ++r) {
        std::vector<size_t> counts(n, 0);
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> pool;
        for (int w = 0; w < n; ++w)
          pool.emplace_back([&, w] {
            for (size_t d = w; d < docs.size(); d += n) counts[w] += tok->encode(docs[d], true, true).size();
          });
        for (auto& th : pool) th.join();
        secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        tokens = 0;
        for (size_t c : counts) tokens += c;
      }
      std::sort(secs.begin(), secs.end());
      const double s = secs[secs.size() / 2];
      std::printf("{\"impl\": \"lingua\", \"tokenizer\": \"%s\", \"path\": \"%s\", \"threads\": %d, \"bytes\": %zu, "
                  "\"documents\": %zu, \"tokens\": %zu, \"seconds\": %.4f, \"mb_per_s\": %.2f, \"tokens_per_s\": %.0f}\n",
                  arg["name"].c_str(), arg["path"].c_str(), n, text.size(), docs.size(), tokens, s,
                  text.size() / s / 1e6, tokens / s);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lingua_tokenizer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
