// Fuzz target: the JSONL corpus reader (lingua/data/jsonl.h) and the training data pipeline over it.
// Input: the bytes of one JSONL file.
// Properties: each line is a document (valid UTF-8 text), blank or skipped with a reason;
// ValidationReader over the file finds the same documents and counts; the UTF-8 helpers agree; a
// DataLoader over the file as a chunk gives batches of in-vocabulary ids, and a second loader
// resumed from its state() gives the same later batches.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/data_fixture.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/loader.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;
using lingua_fuzz::check_batch;

namespace {

std::vector<std::string_view> lines_of(std::string_view s) {  // as std::getline splits a file
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string_view::npos) nl = s.size();
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

void check_utf8_helpers(std::string_view line) {
  std::string fixed(line);
  const int64_t replaced = sanitize_utf8(&fixed);
  FUZZ_CHECK(is_valid_utf8(fixed), "sanitize_utf8 left invalid UTF-8");
  FUZZ_CHECK((replaced == 0) == is_valid_utf8(line), "sanitize_utf8 replaced ", replaced, " sequences of a line that is ",
             is_valid_utf8(line) ? "valid" : "invalid");
  if (replaced == 0) FUZZ_CHECK(fixed == line, "sanitize_utf8 changed valid UTF-8");
  int64_t code_points = 0;
  std::string_view rest = fixed;
  while (!rest.empty()) {  // count sequences by their lead byte's length
    const unsigned char c = static_cast<unsigned char>(rest[0]);
    const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    FUZZ_CHECK(n <= rest.size(), "truncated sequence after sanitize_utf8");
    rest.remove_prefix(n);
    ++code_points;
  }
  FUZZ_CHECK(utf8_length(fixed) == code_points, "utf8_length ", utf8_length(fixed), " != ", code_points);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);

  // Line by line.
  DataStats expected;
  std::vector<std::string> documents;
  for (std::string_view line : lines_of(input)) {
    std::string text;
    const LineKind kind = parse_document_line(line, &text);
    if (kind == LineKind::document) {
      FUZZ_CHECK(is_valid_utf8(text), "a document's text is not valid UTF-8");
      ++expected.documents;
      documents.push_back(text);
    } else {
      count_skipped_line(kind, &expected);
    }
    if (line.size() <= 4096) check_utf8_helpers(line);
  }

  // The same file as a source's validation file.
  const std::string root = lingua_fuzz::scratch_path("corpus");
  lingua_fuzz::write_file(root + "/src/part.val.jsonl", input);
  DataStats stats;
  std::vector<std::string> read = lingua_fuzz::must_succeed(
      "reading a validation file", [&] { return read_validation_texts(root + "/src", 0, &stats); });
  FUZZ_CHECK(read == documents, "ValidationReader found ", read.size(), " documents, line by line ", documents.size());
  FUZZ_CHECK(stats == expected, "ValidationReader counts ", stats.to_json().dump(), " != ", expected.to_json().dump());

  // The same file as a chunk of training data: batches, and a resume from the loader's state.
  lingua_fuzz::write_file(root + "/src/part.chunk.00.jsonl", input);
  // Short windows and batches: few tokens per fill, so few passes over a file with few documents.
  DataConfig cfg = lingua_fuzz::small_loader_config(root, {{"src", 1.0}});
  cfg.batch_size = 1;
  cfg.seq_len = 5;
  const BytesTokenizer tok;
  try {
    DataLoader a(cfg, tok);
    std::vector<Batch> batches;
    nlohmann::json state;
    for (int i = 0; i < 3; ++i) {
      batches.push_back(a.next());
      check_batch(batches.back(), cfg, tok.n_words());
      if (i == 0) state = nlohmann::json::parse(a.state().dump());
    }
    DataLoader b(cfg, tok);
    lingua_fuzz::must_succeed("resuming from a loader's own state", [&] {
      b.load_state(state);
      for (int i = 1; i < 3; ++i) FUZZ_CHECK(b.next() == batches[i], "resumed loader differs at batch ", i);
    });
  } catch (const Error&) {
    FUZZ_CHECK(documents.empty(), "the loader failed on a file with ", documents.size(), " documents");
  }
  return 0;
}
