#include "lingua/data/pipeline.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "lingua/core/error.h"
#include "lingua/data/json_fields.h"
#include "lingua/data/paths.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

nlohmann::json rng_to_json(const PhiloxStream& r) {
  return {{"seed", r.seed}, {"stream", r.stream}, {"counter", r.counter}};
}
PhiloxStream rng_from_json(const nlohmann::json& j) {
  constexpr const char* what = "data loader state: RNG";
  PhiloxStream r(json_uint(j, "seed", UINT64_MAX, what), static_cast<uint32_t>(json_uint(j, "stream", UINT32_MAX, what)));
  r.counter = json_uint(j, "counter", UINT64_MAX, what);
  return r;
}
bool same_rng(const PhiloxStream& a, const PhiloxStream& b) {
  return a.seed == b.seed && a.stream == b.stream && a.counter == b.counter;
}

}  // namespace

// Philox streams of the data loader; the rank is mixed in so ranks draw independently.
constexpr uint32_t kSourceStreamBase = 0xDA7A0000u;
uint32_t data_source_rng_stream(int rank) { return kSourceStreamBase + 2u * static_cast<uint32_t>(rank); }
uint32_t data_shuffle_rng_stream(int rank) { return kSourceStreamBase + 2u * static_cast<uint32_t>(rank) + 1u; }

std::vector<ChunkAssignment> assign_chunks(const std::vector<std::string>& chunk_files, int rank, int world_size) {
  LINGUA_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "data: rank ", rank, " is not in [0, world_size ",
               world_size, ")");
  const int64_t n = static_cast<int64_t>(chunk_files.size());
  LINGUA_CHECK(n > 0, "data: no chunk files to assign");
  std::vector<ChunkAssignment> out;
  if (n >= world_size) {
    for (int64_t c = rank; c < n; c += world_size) out.push_back({chunk_files[c], 0, 1});
  } else {
    const int64_t chunk = rank % n;
    const int64_t sharing = (world_size - 1 - chunk) / n + 1;  // ranks q < W with q % n == chunk
    out.push_back({chunk_files[chunk], rank / n, sharing});
  }
  return out;
}

// ---- SourceReader ----

nlohmann::json SourceReaderState::to_json() const {
  nlohmann::json j = {{"file_index", file_index}, {"offset", offset}, {"line", line}, {"epoch", epoch}};
  if (!already_read.empty()) {  // absent otherwise: states without a re-split stay as they were
    nlohmann::json files = nlohmann::json::object();
    for (const auto& [name, sets] : already_read) {
      nlohmann::json list = nlohmann::json::array();
      for (const ReadLines& r : sets) list.push_back({{"stride", r.stride}, {"offset", r.offset}, {"end", r.end}});
      files[name] = list;
    }
    j["already_read"] = files;
  }
  return j;
}

SourceReaderState SourceReaderState::from_json(const nlohmann::json& j) {
  constexpr const char* what = "data loader state: reader";
  SourceReaderState s;
  s.file_index = json_int(j, "file_index", 0, kMaxStateCount, what);
  s.offset = json_int(j, "offset", 0, kMaxStateCount, what);
  s.line = json_int(j, "line", 0, kMaxStateCount, what);
  s.epoch = json_int(j, "epoch", 0, kMaxStateCount, what);
  if (auto it = j.find("already_read"); it != j.end()) {
    constexpr const char* what_read = "data loader state: reader: already_read";
    LINGUA_CHECK(it->is_object(), what_read, " must be an object of chunk file names, got ", json_excerpt(*it));
    for (const auto& [name, list] : it->items()) {
      LINGUA_CHECK(list.is_array(), what_read, ": '", name, "' must be a list, got ", json_excerpt(list));
      std::vector<ReadLines>& sets = s.already_read[name];
      for (const nlohmann::json& e : list) {
        ReadLines r;
        r.stride = json_int(e, "stride", 1, kMaxStateCount, what_read);
        r.offset = json_int(e, "offset", 0, r.stride - 1, what_read);
        r.end = json_int(e, "end", -1, kMaxStateCount, what_read);
        sets.push_back(r);
      }
    }
  }
  return s;
}

SourceReader::SourceReader(std::string source, std::vector<ChunkAssignment> files)
    : source_(std::move(source)), files_(std::move(files)) {
  LINGUA_CHECK(!files_.empty(), "data source '", source_, "': no chunk files assigned");
}

void SourceReader::set_state(const SourceReaderState& state) {
  LINGUA_CHECK(state.file_index >= 0 && state.file_index < static_cast<int64_t>(files_.size()) && state.offset >= 0 &&
                   state.line >= 0 && state.epoch >= 0,
               "data source '", source_, "': reader state ", state.to_json().dump(), " does not fit its ",
               files_.size(), " chunk file(s)");
  in_.close();
  read_here_ = nullptr;
  state_ = state;
  wraps_without_document_ = 0;
}

void SourceReader::open_current() {
  const std::string& path = files_[state_.file_index].path;
  in_.clear();
  in_.open(path, std::ios::binary);
  LINGUA_CHECK(in_.is_open(), "data source '", source_, "': cannot open chunk file ", path);
  const auto read = state_.already_read.find(fs::path(path).filename().string());
  read_here_ = read == state_.already_read.end() ? nullptr : &read->second;
  if (state_.offset > 0) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    LINGUA_CHECK(!ec && static_cast<uint64_t>(state_.offset) <= size, "data source '", source_, "': offset ",
                 state_.offset, " is past the end of ", path, " (", size,
                 " bytes); did the chunk files change since the state was saved?");
    in_.seekg(state_.offset);
  }
}

void SourceReader::next_file() {
  in_.close();
  read_here_ = nullptr;
  state_.offset = 0;
  state_.line = 0;
  if (++state_.file_index == static_cast<int64_t>(files_.size())) {
    state_.file_index = 0;
    ++state_.epoch;
    state_.already_read.clear();  // it described the epoch that just ended
    LINGUA_CHECK(++wraps_without_document_ < 2, "data source '", source_, "': a whole pass over its chunk files (",
                 files_.front().path, (files_.size() > 1 ? ", ..." : ""), ") held no valid document for this rank");
  }
}

bool SourceReader::current_read_whole() const {
  if (state_.already_read.empty()) return false;
  const ChunkAssignment& a = files_[state_.file_index];
  const auto it = state_.already_read.find(fs::path(a.path).filename().string());
  if (it == state_.already_read.end()) return false;
  // One set to the end of the file holding our residue class (our stride is a multiple of its).
  for (const ReadLines& r : it->second)
    if (r.end < 0 && a.line_stride % r.stride == 0 && a.line_offset % r.stride == r.offset) return true;
  return false;
}

void SourceReader::next_document(std::string* text, DataStats* stats) {
  for (;;) {
    if (!in_.is_open()) {
      if (state_.offset == 0 && current_read_whole()) {  // nothing of ours is left in it this epoch
        next_file();
        continue;
      }
      open_current();
    }
    if (!std::getline(in_, line_)) {  // end of this file
      next_file();
      continue;
    }
    state_.offset += static_cast<int64_t>(line_.size()) + (in_.eof() ? 0 : 1);
    const int64_t line = state_.line++;
    const ChunkAssignment& a = files_[state_.file_index];
    if (line % a.line_stride != a.line_offset) continue;  // another rank's line
    if (read_here_ && std::any_of(read_here_->begin(), read_here_->end(),
                                  [line](const ReadLines& r) { return r.contains(line); }))
      continue;  // read in this epoch before a re-split
    LineKind kind = parse_document_line(line_, text);
    if (kind == LineKind::document) {
      ++stats->documents;
      wraps_without_document_ = 0;
      return;
    }
    count_skipped_line(kind, stats);
  }
}

// ---- SourceStream ----

nlohmann::json SourceStreamState::to_json() const { return {{"reader", reader.to_json()}, {"tokens", tokens}}; }

SourceStreamState SourceStreamState::from_json(const nlohmann::json& j) {
  SourceStreamState s;
  constexpr const char* what = "data loader state: source";
  s.reader = SourceReaderState::from_json(json_field(j, "reader", what));
  const nlohmann::json& tokens = json_field(j, "tokens", what);
  LINGUA_CHECK(tokens.is_array(), what, ": 'tokens' must be a list of token ids, got ", json_excerpt(tokens));
  s.tokens.reserve(tokens.size());
  for (const nlohmann::json& t : tokens) s.tokens.push_back(static_cast<int32_t>(json_int_value(t, 0, INT32_MAX, "tokens", what)));
  return s;
}

SourceStream::SourceStream(std::string source, std::vector<ChunkAssignment> files, const Tokenizer& tokenizer,
                           bool add_bos, bool add_eos)
    : source_(source), reader_(std::move(source), std::move(files)), tokenizer_(&tokenizer), add_bos_(add_bos),
      add_eos_(add_eos) {}

void SourceStream::next_window(int window, std::vector<int32_t>* out, DataStats* stats) {
  int64_t epoch_with_tokens = reader_.state().epoch;
  while (buffer_.size() - head_ < static_cast<size_t>(window)) {
    if (head_ > 0) {  // keep the buffer short: drop what was emitted
      buffer_.erase(buffer_.begin(), buffer_.begin() + head_);
      head_ = 0;
    }
    reader_.next_document(&text_, stats);
    std::vector<int32_t> ids = tokenizer_->encode(text_, add_bos_, add_eos_);
    stats->tokens += static_cast<int64_t>(ids.size());
    if (!ids.empty()) {
      epoch_with_tokens = reader_.state().epoch;
    } else {
      LINGUA_CHECK(reader_.state().epoch - epoch_with_tokens < 2, "data source '", source_,
                   "': a whole pass over its chunk files produced no tokens (empty documents and add_bos = "
                   "add_eos = false?)");
    }
    buffer_.insert(buffer_.end(), ids.begin(), ids.end());
  }
  out->insert(out->end(), buffer_.begin() + head_, buffer_.begin() + head_ + window);
  head_ += window;
}

SourceStreamState SourceStream::state() const {
  return {reader_.state(), std::vector<int32_t>(buffer_.begin() + head_, buffer_.end())};
}

void SourceStream::set_state(const SourceStreamState& state) {
  reader_.set_state(state.reader);
  buffer_ = state.tokens;
  head_ = 0;
}

// ---- Pipeline ----

bool PipelineState::operator==(const PipelineState& o) const {
  return sources == o.sources && same_rng(source_rng, o.source_rng) && same_rng(shuffle_rng, o.shuffle_rng) &&
         stats == o.stats;
}

nlohmann::json PipelineState::to_json() const {
  nlohmann::json s = nlohmann::json::object();
  for (const auto& [name, st] : sources) s[name] = st.to_json();
  return {{"sources", s},
          {"source_rng", rng_to_json(source_rng)},
          {"shuffle_rng", rng_to_json(shuffle_rng)},
          {"stats", stats.to_json()}};
}

PipelineState PipelineState::from_json(const nlohmann::json& j) {
  constexpr const char* what = "data loader state";
  PipelineState s;
  const nlohmann::json& sources = json_field(j, "sources", what);
  LINGUA_CHECK(sources.is_object(), what, ": 'sources' must be an object, got ", json_excerpt(sources));
  for (const auto& [name, st] : sources.items()) s.sources[name] = SourceStreamState::from_json(st);
  s.source_rng = rng_from_json(json_field(j, "source_rng", what));
  s.shuffle_rng = rng_from_json(json_field(j, "shuffle_rng", what));
  s.stats = DataStats::from_json(json_field(j, "stats", what));
  return s;
}

Pipeline::Pipeline(const DataConfig& config, const Tokenizer& tokenizer, int rank, int world_size)
    : config_(config),
      n_words_(tokenizer.n_words()),
      source_rng_(static_cast<uint64_t>(config.seed), data_source_rng_stream(rank)),
      shuffle_rng_(static_cast<uint64_t>(config.seed), data_shuffle_rng_stream(rank)) {
  const DataConfig& c = config_;
  LINGUA_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "data: rank ", rank, " is not in [0, world_size ",
               world_size, ")");
  LINGUA_CHECK(c.batch_size > 0, "data.batch_size must be > 0 (got ", c.batch_size, ")");
  LINGUA_CHECK(c.seq_len > 0, "data.seq_len must be > 0 (got ", c.seq_len, ")");
  LINGUA_CHECK(c.prefetch_size > 0, "data.prefetch_size must be > 0 (got ", c.prefetch_size, ")");
  LINGUA_CHECK(c.n_views == 2, "data.n_views = ", c.n_views, ": only 2 (input and shifted target) is supported");
  LINGUA_CHECK(!c.add_bos || tokenizer.bos_id() >= 0, "data.add_bos is set but the tokenizer has no BOS id");
  LINGUA_CHECK(!c.add_eos || tokenizer.eos_id() >= 0, "data.add_eos is set but the tokenizer has no EOS id");
  LINGUA_CHECK(!c.root_dir.empty(), "data.root_dir is not set");
  require_directory(c.root_dir, "data.root_dir");
  LINGUA_CHECK(!c.sources.empty(), "data.sources is empty: name at least one source directory of ", c.root_dir);
  double total = 0;
  for (const auto& [name, weight] : c.sources) {
    LINGUA_CHECK(std::isfinite(weight) && weight > 0, "data.sources.", name, ": weight ", weight, " must be > 0");
    total += weight;
  }
  double cum = 0;
  for (const auto& [name, weight] : c.sources) {
    const std::string dir = (fs::path(c.root_dir) / name).string();
    std::vector<std::string> files;
    try {
      files = find_chunk_files(dir);
    } catch (const Error& e) {
      fail("data.sources.", name, ": ", e.what());
    }
    names_.push_back(name);
    cum += weight / total;
    cumulative_.push_back(cum);
    streams_.emplace_back(name, assign_chunks(files, rank, world_size), tokenizer, c.add_bos, c.add_eos);
  }
  cumulative_.back() = 1.0;
  position_ = {std::make_shared<const PipelineState>(live_state()), 0, stats_};
}

std::map<std::string, std::vector<ChunkAssignment>> Pipeline::assignments() const {
  std::map<std::string, std::vector<ChunkAssignment>> out;
  for (size_t i = 0; i < names_.size(); ++i) out[names_[i]] = streams_[i].files();
  return out;
}

PipelineState Pipeline::live_state() const {
  PipelineState s;
  for (size_t i = 0; i < names_.size(); ++i) s.sources[names_[i]] = streams_[i].state();
  s.source_rng = source_rng_;
  s.shuffle_rng = shuffle_rng_;
  s.stats = stats_;
  return s;
}

void Pipeline::set_live_state(const PipelineState& s) {
  std::vector<std::string> names;
  for (const auto& [name, st] : s.sources) names.push_back(name);
  if (names != names_) {
    std::string have, want;
    for (const auto& n : names) have += (have.empty() ? "" : ", ") + n;
    for (const auto& n : names_) want += (want.empty() ? "" : ", ") + n;
    fail("data loader state has sources {", have, "} but data.sources has {", want, "}");
  }
  for (size_t i = 0; i < names_.size(); ++i) {  // check everything before changing anything
    const SourceStreamState& st = s.sources.at(names_[i]);
    LINGUA_CHECK(st.reader.file_index >= 0 && st.reader.file_index < static_cast<int64_t>(streams_[i].files().size()),
                 "data loader state: source '", names_[i], "' is at file ", st.reader.file_index, " but this rank has ",
                 streams_[i].files().size(), " chunk file(s)");
    for (int32_t id : st.tokens)  // they go into batches as they are
      LINGUA_CHECK(id >= 0 && id < n_words_, "data loader state: source '", names_[i], "' holds token id ", id,
                   " outside the tokenizer's vocabulary [0, ", n_words_, ")");
  }
  for (size_t i = 0; i < names_.size(); ++i) streams_[i].set_state(s.sources.at(names_[i]));
  source_rng_ = s.source_rng;
  shuffle_rng_ = s.shuffle_rng;
  stats_ = s.stats;
}

void Pipeline::fill(const std::atomic<bool>* cancel) {
  const int64_t n = static_cast<int64_t>(config_.batch_size) * config_.prefetch_size;
  const int window = config_.seq_len + 1;
  fill_tokens_.clear();
  fill_tokens_.reserve(static_cast<size_t>(n) * window);
  for (int64_t i = 0; i < n; ++i) {
    if (cancel && cancel->load(std::memory_order_relaxed)) throw PipelineCancelled{};
    const double u = source_rng_.uniform();
    const size_t s = std::upper_bound(cumulative_.begin(), cumulative_.end(), u) - cumulative_.begin();
    streams_[std::min(s, streams_.size() - 1)].next_window(window, &fill_tokens_, &stats_);
  }
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order_[i], order_[shuffle_rng_.below(i + 1)]);
}

Batch Pipeline::next(const std::atomic<bool>* cancel) {
  if (!fill_valid_) {
    fill_start_ = std::make_shared<const PipelineState>(live_state());
    fill(cancel);
    fill_valid_ = true;
  }
  const int B = config_.batch_size, T = config_.seq_len, W = T + 1;
  Batch b;
  b.batch_size = B;
  b.seq_len = T;
  b.input.resize(static_cast<size_t>(B) * T);
  b.target.resize(static_cast<size_t>(B) * T);
  for (int r = 0; r < B; ++r) {
    const int32_t* w = fill_tokens_.data() + order_[next_batch_ * B + r] * W;
    std::copy(w, w + T, b.input.begin() + static_cast<size_t>(r) * T);
    std::copy(w + 1, w + W, b.target.begin() + static_cast<size_t>(r) * T);
  }
  if (++next_batch_ == batches_per_fill()) {  // fill used up: the next batch starts a new one
    fill_valid_ = false;
    next_batch_ = 0;
    position_ = {std::make_shared<const PipelineState>(live_state()), 0, stats_};
  } else {
    position_ = {fill_start_, next_batch_, stats_};
  }
  return b;
}

void Pipeline::seek(const PipelinePosition& position) {
  LINGUA_CHECK(position.fill_start, "data loader state: no pipeline state");
  LINGUA_CHECK(position.next_batch >= 0 && position.next_batch < batches_per_fill(), "data loader state: next_batch ",
               position.next_batch, " is not in [0, prefetch_size ", batches_per_fill(), ")");
  set_live_state(*position.fill_start);
  fill_valid_ = false;
  next_batch_ = position.next_batch;
  position_ = position;
}

}  // namespace lingua
