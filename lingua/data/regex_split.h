#pragma once
// Pre-tokenisation by a Unicode regex (PCRE2, UTF + Unicode properties, JIT when available): the
// text cut into the regex's successive matches, each text between matches a piece of its own (as
// tiktoken and Hugging Face's Split "Isolated" do). Thread-safe: const calls share the compiled
// pattern, each call has its own match data.
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace lingua {

class RegexSplitter {
 public:
  // Fails naming `what` (e.g. "tiktoken") and the offset when the pattern does not compile, and
  // when the build has no PCRE2.
  RegexSplitter(const std::string& pattern, const std::string& what);
  ~RegexSplitter();
  // Calls piece() with each piece of `text`, in order; text must be valid UTF-8.
  void split(std::string_view text, const std::function<void(std::string_view)>& piece) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string what_;
};

}  // namespace lingua
