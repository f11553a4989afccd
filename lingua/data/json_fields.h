#pragma once
// Typed reads of the JSON a run writes and later reads back (a checkpoint's train state and the
// data loader's state in it). A missing key, a value of another type or one out of range is a
// lingua::Error naming the key; never a nlohmann exception, nor a float converted to an integer
// it does not fit (undefined behaviour: {"epoch": 1e300}).
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lingua/core/error.h"

namespace lingua {

// Counters a run cannot reach (documents, tokens, lines, epochs, steps): bounded so that
// incrementing a restored one cannot overflow.
inline constexpr int64_t kMaxStateCount = int64_t(1) << 62;

// A value as a message shows it: at most 60 characters of its JSON.
inline std::string json_excerpt(const nlohmann::json& v) {
  std::string text = v.dump(-1, ' ', /*ensure_ascii=*/true);
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

// obj[key], which must exist. `what` names the JSON in messages ("data loader state").
inline const nlohmann::json& json_field(const nlohmann::json& obj, const char* key, std::string_view what) {
  LINGUA_CHECK(obj.is_object(), what, ": expected a JSON object holding '", key, "', got ", json_excerpt(obj));
  auto it = obj.find(key);
  LINGUA_CHECK(it != obj.end(), what, ": '", key, "' is missing");
  return *it;
}

// v as an integer in [lo, hi] (a float, even 3.0, is refused). `key` names v in messages.
inline int64_t json_int_value(const nlohmann::json& v, int64_t lo, int64_t hi, const char* key,
                              std::string_view what) {
  bool ok = v.is_number_integer();
  if (ok && v.is_number_unsigned()) ok = hi >= 0 && v.get<uint64_t>() <= static_cast<uint64_t>(hi);
  if (ok) ok = v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  if (!ok) fail(what, ": '", key, "' must be an integer in [", lo, ", ", hi, "], got ", json_excerpt(v));
  return v.get<int64_t>();
}

// obj[key] as an integer in [lo, hi].
inline int64_t json_int(const nlohmann::json& obj, const char* key, int64_t lo, int64_t hi, std::string_view what) {
  return json_int_value(json_field(obj, key, what), lo, hi, key, what);
}

// obj[key] as an unsigned integer up to max.
inline uint64_t json_uint(const nlohmann::json& obj, const char* key, uint64_t max, std::string_view what) {
  const nlohmann::json& v = json_field(obj, key, what);
  const bool ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  if (!ok || v.get<uint64_t>() > max) fail(what, ": '", key, "' must be an integer in [0, ", max, "], got ", json_excerpt(v));
  return v.get<uint64_t>();
}

}  // namespace lingua
