#pragma once
// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF): used wherever text goes
// into JSON or YAML (configs, corpora), which must be valid UTF-8.
#include <cstddef>
#include <string_view>

namespace lingua {

// Length of the valid UTF-8 sequence starting at s[i] (i < s.size()), or 0 when it is invalid.
size_t utf8_sequence_length(std::string_view s, size_t i);
bool is_valid_utf8(std::string_view s);

}  // namespace lingua
