#include "lingua/data/jsonl.h"

#include <algorithm>
#include <filesystem>

#include "lingua/core/error.h"
#include "lingua/data/json_fields.h"
#include "lingua/data/paths.h"

namespace fs = std::filesystem;

namespace lingua {

nlohmann::json DataStats::to_json() const {
  return {{"documents", documents},
          {"tokens", tokens},
          {"skipped", {{"bad_json", bad_json}, {"missing_text", missing_text}, {"invalid_utf8", invalid_utf8}}}};
}

DataStats DataStats::from_json(const nlohmann::json& j) {
  constexpr const char* what = "data loader state: stats";
  DataStats s;
  s.documents = json_int(j, "documents", 0, kMaxStateCount, what);
  s.tokens = json_int(j, "tokens", 0, kMaxStateCount, what);
  const auto& k = json_field(j, "skipped", what);
  s.bad_json = json_int(k, "bad_json", 0, kMaxStateCount, what);
  s.missing_text = json_int(k, "missing_text", 0, kMaxStateCount, what);
  s.invalid_utf8 = json_int(k, "invalid_utf8", 0, kMaxStateCount, what);
  return s;
}

std::string DataStats::skipped_summary() const {
  return detail::concat(skipped(), " malformed line", skipped() == 1 ? "" : "s", " (bad JSON ", bad_json,
                        ", no text/content ", missing_text, ", invalid UTF-8 ", invalid_utf8, ")");
}

namespace {

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> list_files(const std::string& dir, bool (*keep)(const std::string& name)) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!keep(name)) continue;
    // A directory named like a data file would otherwise be passed over without a word.
    LINGUA_CHECK(!e.is_directory(), "data file ", e.path().string(), " is a directory, expected a file");
    if (e.is_regular_file()) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_val_name(const std::string& name) { return ends_with(name, ".val.jsonl"); }
bool is_chunk_name(const std::string& name) {
  if (!ends_with(name, ".jsonl") || is_val_name(name)) return false;
  // glob *.chunk.*.jsonl: ".chunk." somewhere before the ".jsonl" suffix
  return name.substr(0, name.size() - 6).find(".chunk.") != std::string::npos;
}

}  // namespace

int64_t sanitize_utf8(std::string* s) {
  if (is_valid_utf8(*s)) return 0;
  std::string out;
  out.reserve(s->size() + 16);
  int64_t replaced = 0;
  for (size_t i = 0; i < s->size();) {
    size_t n = utf8_sequence_length(*s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++replaced;
      ++i;
    } else {
      out.append(*s, i, n);
      i += n;
    }
  }
  *s = std::move(out);
  return replaced;
}

std::string_view as_valid_utf8(std::string_view text, std::string* storage) {
  if (is_valid_utf8(text)) return text;
  storage->assign(text);
  sanitize_utf8(storage);
  return *storage;
}

int64_t utf8_length(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

LineKind parse_document_line(std::string_view line, std::string* text) {
  if (is_blank(line)) return LineKind::blank;
  // nlohmann rejects ill-formed UTF-8 inside strings, so a parse failure is told apart afterwards.
  nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return is_valid_utf8(line) ? LineKind::bad_json : LineKind::invalid_utf8;
  if (!j.is_object()) return LineKind::missing_text;
  for (const char* key : {"text", "content"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) {
      *text = std::move(it->get_ref<std::string&>());
      return LineKind::document;
    }
  }
  return LineKind::missing_text;
}

void count_skipped_line(LineKind kind, DataStats* stats) {
  if (!stats) return;
  switch (kind) {
    case LineKind::bad_json: ++stats->bad_json; break;
    case LineKind::missing_text: ++stats->missing_text; break;
    case LineKind::invalid_utf8: ++stats->invalid_utf8; break;
    case LineKind::document:
    case LineKind::blank: break;
  }
}

std::vector<std::string> find_chunk_files(const std::string& source_dir) {
  require_directory(source_dir, "data source directory");
  auto files = list_files(source_dir, is_chunk_name);
  LINGUA_CHECK(!files.empty(), "data source directory ", source_dir, " holds no *.chunk.*.jsonl file");
  return files;
}

std::vector<std::string> find_validation_files(const std::string& source_dir) {
  require_directory(source_dir, "data source directory");
  return list_files(source_dir, is_val_name);
}

ValidationReader::ValidationReader(const std::string& source_dir) : files_(find_validation_files(source_dir)) {
  LINGUA_CHECK(!files_.empty(), "data source directory ", source_dir, " holds no *.val.jsonl file");
}

bool ValidationReader::next(std::string* text, DataStats* stats) {
  while (file_index_ < files_.size()) {
    if (!in_.is_open()) {
      in_.clear();
      in_.open(files_[file_index_], std::ios::binary);
      LINGUA_CHECK(in_.is_open(), "cannot open validation file ", files_[file_index_]);
    }
    if (!std::getline(in_, line_)) {
      in_.close();
      ++file_index_;
      continue;
    }
    LineKind kind = parse_document_line(line_, text);
    if (kind == LineKind::document) {
      if (stats) ++stats->documents;
      return true;
    }
    count_skipped_line(kind, stats);
  }
  return false;
}

std::vector<std::string> read_validation_texts(const std::string& source_dir, size_t max_docs, DataStats* stats) {
  ValidationReader reader(source_dir);
  std::vector<std::string> texts;
  std::string text;
  while ((max_docs == 0 || texts.size() < max_docs) && reader.next(&text, stats)) texts.push_back(std::move(text));
  return texts;
}

}  // namespace lingua
