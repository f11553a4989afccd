#pragma once
// Errors: every failure the user can cause is a lingua::Error whose message names the problem
// (file, line, key, tensor). Internal invariants use LINGUA_ASSERT.
#include <sstream>
#include <stdexcept>
#include <string>

namespace lingua {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... A>
std::string concat(A&&... a) {
  std::ostringstream os;
  (os << ... << a);
  return os.str();
}
}  // namespace detail

// throw Error(concat(args...))
template <class... A>
[[noreturn]] void fail(A&&... a) {
  throw Error(detail::concat(std::forward<A>(a)...));
}

}  // namespace lingua

#define LINGUA_CHECK(cond, ...)                  \
  do {                                           \
    if (!(cond)) ::lingua::fail(__VA_ARGS__);    \
  } while (0)

#define LINGUA_ASSERT(cond)                                                                   \
  do {                                                                                        \
    if (!(cond)) ::lingua::fail("internal error: ", #cond, " at ", __FILE__, ":", __LINE__); \
  } while (0)
