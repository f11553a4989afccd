// Pre-tokenisation by a PCRE2 regex (regex_split.h).
#include "lingua/data/regex_split.h"

#if LINGUA_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif

#include "lingua/core/error.h"

namespace lingua {

#if LINGUA_PCRE2
struct RegexSplitter::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

RegexSplitter::RegexSplitter(const std::string& pattern, const std::string& what) : what_(what) {
  code_ = std::make_unique<Code>();
  int err = 0;
  PCRE2_SIZE at = 0;
  code_->code = pcre2_compile((PCRE2_SPTR)pattern.c_str(), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err, &at, nullptr);
  if (!code_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail(what, ": the pre-tokenizer pattern does not compile at offset ", at, ": ", (const char*)msg);
  }
  pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);  // (without JIT, matching is only slower)
}

void RegexSplitter::split(std::string_view text, const std::function<void(std::string_view)>& piece) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  auto next_char = [&](size_t i) {
    ++i;
    while (i < text.size() && ((unsigned char)text[i] & 0xC0) == 0x80) ++i;
    return i;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    // (valid UTF-8 by contract: without NO_UTF_CHECK every call would check the whole text again)
    int rc = pcre2_match(code_->code, (PCRE2_SPTR)text.data(), text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(code_->code, (PCRE2_SPTR)text.data(), text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                       nullptr);
    size_t m0 = text.size(), m1 = text.size();
    if (rc >= 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      m0 = ov[0];
      m1 = ov[1];
    } else if (rc != PCRE2_ERROR_NOMATCH) {
      pcre2_match_data_free(md);
      fail(what_, ": the pre-tokenizer failed (PCRE2 error ", rc, ")");
    }
    if (m0 > pos) piece(text.substr(pos, m0 - pos));  // text no alternative matched
    if (m1 == m0) {                                     // an empty match: step one character
      if (m0 >= text.size()) break;
      const size_t next = next_char(m0);
      piece(text.substr(m0, next - m0));
      pos = next;
      continue;
    }
    piece(text.substr(m0, m1 - m0));
    pos = m1;
  }
  pcre2_match_data_free(md);
}
#else
struct RegexSplitter::Code {};
RegexSplitter::RegexSplitter(const std::string&, const std::string& what) : what_(what) {
  fail(what, ": this build has no PCRE2 (its headers were missing when it was configured; Debian: libpcre2-dev), "
       "which the pre-tokenizer needs");
}
void RegexSplitter::split(std::string_view, const std::function<void(std::string_view)>&) const {}
#endif

RegexSplitter::~RegexSplitter() = default;

}  // namespace lingua
