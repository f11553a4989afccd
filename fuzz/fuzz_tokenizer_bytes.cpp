// Fuzz target: the bytes tokenizer (lingua/data/tokenizer.h). Input: text to encode, and the same
// bytes read as little-endian int32 ids to decode.
// Properties: encode_with_byte_counts gives the same ids with byte counts that partition the text;
// encode gives one id per byte (plus BOS/EOS) and decode(encode(x)) == x for any bytes;
// decode of ids in [0, 258) gives the bytes of the ids < 256, and fails (lingua::Error) on any other.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const BytesTokenizer tok;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool bos = size > 0 && (data[0] & 1), eos = size > 0 && (data[0] & 2);
  const std::vector<int32_t> ids = tok.encode(text, bos, eos);
  FUZZ_CHECK(ids.size() == size + bos + eos, "encode gave ", ids.size(), " ids for ", size, " bytes");
  if (bos) FUZZ_CHECK(ids.front() == tok.bos_id(), "first id ", ids.front());
  if (eos) FUZZ_CHECK(ids.back() == tok.eos_id(), "last id ", ids.back());
  for (size_t i = 0; i < size; ++i)
    FUZZ_CHECK(ids[i + bos] == data[i], "byte ", i, " encoded as ", ids[i + bos]);
  FUZZ_CHECK(tok.decode(ids) == text, "decode(encode(x)) != x");

  // The byte counts (bits per byte): the same ids, 0 for BOS/EOS, >= 0 each, summing to the text's size.
  std::vector<int32_t> counts;
  const std::vector<int32_t> counted = tok.encode_with_byte_counts(text, bos, eos, &counts);
  FUZZ_CHECK(counted == ids, "encode_with_byte_counts gave other ids than encode");
  FUZZ_CHECK(counts.size() == ids.size(), counts.size(), " byte counts for ", ids.size(), " ids");
  int64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    FUZZ_CHECK(counts[i] >= 0, "byte count ", counts[i], " of id ", ids[i]);
    if ((bos && i == 0) || (eos && i + 1 == counts.size())) FUZZ_CHECK(counts[i] == 0, "BOS/EOS count ", counts[i]);
    total += counts[i];
  }
  FUZZ_CHECK(total == static_cast<int64_t>(size), "byte counts sum to ", total, " for ", size, " bytes");

  std::vector<int32_t> raw(size / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 4);
  bool in_range = true;
  std::string bytes;
  for (int32_t id : raw) {
    in_range &= id >= 0 && id < tok.n_words();
    if (id >= 0 && id < 256) bytes.push_back(static_cast<char>(id));
  }
  try {
    const std::string decoded = tok.decode(raw);
    FUZZ_CHECK(in_range, "decode accepted an id outside the vocabulary");
    FUZZ_CHECK(decoded == bytes, "decode gave other bytes");
  } catch (const Error&) {
    FUZZ_CHECK(!in_range, "decode refused ids of the vocabulary");
  }
  return 0;
}
