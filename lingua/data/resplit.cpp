#include "lingua/data/resplit.h"

#include <algorithm>
#include <set>
#include <string>

#include "lingua/core/error.h"
#include "lingua/data/json_fields.h"
#include "lingua/data/pipeline.h"

namespace lingua {

using json = nlohmann::json;

namespace {

// One old rank's state, parsed.
struct OldRank {
  int64_t version = 0;
  json config;  // the fingerprint (loader.cpp), rank and world_size removed
  std::map<std::string, std::vector<ChunkAssignment>> files;  // by source; path = the file's name
  PipelineState fill_start;
  int64_t next_batch = 0;
};

// The "files" list of a loader state for one source (loader.cpp writes it).
std::vector<ChunkAssignment> files_from_json(const json& list, const std::string& source) {
  const std::string what = "data loader state: files of source '" + source + "'";
  LINGUA_CHECK(list.is_array(), what, ": expected a list, got ", json_excerpt(list));
  std::vector<ChunkAssignment> out;
  for (const json& f : list) {
    const json& name = json_field(f, "file", what);
    LINGUA_CHECK(name.is_string(), what, ": 'file' must be a file name, got ", json_excerpt(name));
    ChunkAssignment a;
    a.path = name.get<std::string>();
    a.line_stride = json_int(f, "line_stride", 1, kMaxStateCount, what);
    a.line_offset = json_int(f, "line_offset", 0, a.line_stride - 1, what);
    out.push_back(std::move(a));
  }
  return out;
}

json files_to_json(const std::vector<ChunkAssignment>& files) {
  json list = json::array();
  for (const ChunkAssignment& f : files)
    list.push_back({{"file", f.path}, {"line_offset", f.line_offset}, {"line_stride", f.line_stride}});
  return list;
}

OldRank parse_old(const json& state, int rank, int world) {
  OldRank o;
  constexpr const char* what = "data loader state";
  o.version = json_int(state, "version", 0, INT32_MAX, what);
  o.config = json_field(state, "config", what);
  LINGUA_CHECK(o.config.is_object(), what, ": 'config' must be an object, got ", json_excerpt(o.config));
  LINGUA_CHECK(json_int(o.config, "rank", 0, INT32_MAX, what) == rank, what, ": saved by rank ", o.config["rank"].dump(),
               " but it is state ", rank);
  LINGUA_CHECK(json_int(o.config, "world_size", 1, INT32_MAX, what) == world, what, ": saved with world_size ",
               o.config["world_size"].dump(), " but the checkpoint holds ", world, " states");
  o.config.erase("rank");
  o.config.erase("world_size");
  const json& files = json_field(state, "files", what);
  LINGUA_CHECK(files.is_object(), what, ": 'files' must be an object, got ", json_excerpt(files));
  for (const auto& [source, list] : files.items()) o.files[source] = files_from_json(list, source);
  o.fill_start = PipelineState::from_json(json_field(state, "fill_start", what));
  o.next_batch = json_int(state, "next_batch", 0, json_int(o.config, "prefetch_size", 1, INT32_MAX, what) - 1, what);
  std::set<std::string> in_files, in_state;
  for (const auto& [source, list] : o.files) in_files.insert(source);
  for (const auto& [source, st] : o.fill_start.sources) in_state.insert(source);
  LINGUA_CHECK(in_files == in_state, what, ": 'files' and 'fill_start' name different sources");
  for (const auto& [source, st] : o.fill_start.sources)
    LINGUA_CHECK(st.reader.file_index < static_cast<int64_t>(o.files[source].size()), what, ": source '", source,
                 "' is at file ", st.reader.file_index, " of ", o.files[source].size());
  return o;
}

// Lines read in an epoch, for one chunk file: (stride, offset) -> end (-1: to the end of the file).
using ReadMap = std::map<std::pair<int64_t, int64_t>, int64_t>;

void add_read(ReadMap& m, int64_t stride, int64_t offset, int64_t end) {
  if (end == 0) return;
  auto [it, fresh] = m.try_emplace({stride, offset}, end);
  if (!fresh) it->second = (it->second < 0 || end < 0) ? -1 : std::max(it->second, end);
}

// The map as ReadLines; a file read whole (one whole set of stride 1, or every offset of a stride
// to the end) becomes one set, so the new reader passes it without opening it.
std::vector<ReadLines> read_lines(const ReadMap& m) {
  std::map<int64_t, int64_t> whole_offsets;  // stride -> offsets read to the end
  for (const auto& [key, end] : m)
    if (end < 0) ++whole_offsets[key.first];
  for (const auto& [stride, n] : whole_offsets)
    if (n == stride) return {ReadLines{1, 0, -1}};
  std::vector<ReadLines> out;
  for (const auto& [key, end] : m) out.push_back({key.first, key.second, end});
  return out;
}

DataStats& operator+=(DataStats& a, const DataStats& b) {
  a.documents += b.documents;
  a.tokens += b.tokens;
  a.bad_json += b.bad_json;
  a.missing_text += b.missing_text;
  a.invalid_utf8 += b.invalid_utf8;
  return a;
}

}  // namespace

std::vector<json> resplit_loader_states(const std::vector<json>& old_states, int new_world, ResplitSummary* summary) {
  const int n_old = static_cast<int>(old_states.size());
  LINGUA_CHECK(n_old >= 1, "data loader states: none to re-split");
  LINGUA_CHECK(new_world >= 1, "data loader states: cannot re-split over ", new_world, " ranks");
  std::vector<OldRank> old;
  for (int r = 0; r < n_old; ++r) {
    try {
      old.push_back(parse_old(old_states[r], r, n_old));
    } catch (const Error& e) {
      fail("rank ", r, " of ", n_old, ": ", e.what());
    } catch (const json::exception& e) {
      fail("rank ", r, " of ", n_old, ": data loader state: malformed JSON: ", e.what());
    }
    LINGUA_CHECK(old[r].version == old[0].version && old[r].config == old[0].config, "data loader states of ranks 0 and ",
                 r, " were saved under different configs (", old[0].config.dump(), " vs ", old[r].config.dump(), ")");
    LINGUA_CHECK(old[r].fill_start.source_rng.seed == old[0].fill_start.source_rng.seed &&
                     old[r].fill_start.shuffle_rng.seed == old[0].fill_start.shuffle_rng.seed,
                 "data loader states of ranks 0 and ", r, " have different RNG seeds");
  }
  if (summary) *summary = {};
  const int64_t batch_size = json_int(old[0].config, "batch_size", 1, INT32_MAX, "data loader state");
  for (const OldRank& o : old) {
    LINGUA_CHECK(o.files.size() == old[0].files.size(), "data loader states name different sources");
    if (summary) summary->replayed_windows += o.next_batch * batch_size;
  }
  if (new_world == n_old) return old_states;

  // Per new rank, the state being built.
  std::vector<PipelineState> fresh(new_world);
  std::vector<json> new_files(new_world, json::object());
  for (const auto& [source, list0] : old[0].files) {
    // The chunk files: every one is some old rank's (assign_chunks leaves none out).
    std::set<std::string> names;
    for (int r = 0; r < n_old; ++r) {
      LINGUA_CHECK(old[r].files.count(source), "data loader state of rank ", r, " has no source '", source, "'");
      for (const ChunkAssignment& a : old[r].files.at(source)) names.insert(a.path);
    }
    const std::vector<std::string> sorted(names.begin(), names.end());
    for (int r = 0; r < n_old; ++r)
      LINGUA_CHECK(old[r].files.at(source) == assign_chunks(sorted, r, n_old), "data loader state of rank ", r,
                   ": its chunk files of source '", source, "' (", files_to_json(old[r].files.at(source)).dump(),
                   ") are not rank ", r, "'s share of the ", sorted.size(), " files the ", n_old, " states list");

    int64_t epoch = kMaxStateCount;
    for (const OldRank& o : old) epoch = std::min(epoch, o.fill_start.sources.at(source).reader.epoch);
    if (summary) summary->epoch.push_back(epoch);
    std::map<std::string, ReadMap> read;  // by file name: the lines of `epoch` already read
    for (const OldRank& o : old) {
      const std::vector<ChunkAssignment>& files = o.files.at(source);
      const SourceReaderState& s = o.fill_start.sources.at(source).reader;
      for (int64_t i = 0; i < static_cast<int64_t>(files.size()); ++i) {
        const ChunkAssignment& a = files[i];
        if (s.epoch > epoch || i < s.file_index)
          add_read(read[a.path], a.line_stride, a.line_offset, -1);
        else if (i == s.file_index)
          add_read(read[a.path], a.line_stride, a.line_offset, s.line);
      }
      if (s.epoch == epoch)  // lines its own state passes over (from an earlier re-split)
        for (const auto& [name, sets] : s.already_read)
          if (names.count(name))
            for (const ReadLines& l : sets) add_read(read[name], l.stride, l.offset, l.end);
    }
    for (int k = 0; k < new_world; ++k) {
      const std::vector<ChunkAssignment> mine = assign_chunks(sorted, k, new_world);
      SourceStreamState ss;
      ss.reader.epoch = epoch;
      for (const ChunkAssignment& a : mine)
        if (auto it = read.find(a.path); it != read.end() && !it->second.empty())
          ss.reader.already_read[a.path] = read_lines(it->second);
      for (int r = k; r < n_old; r += new_world) {
        const std::vector<int32_t>& t = old[r].fill_start.sources.at(source).tokens;
        ss.tokens.insert(ss.tokens.end(), t.begin(), t.end());
      }
      fresh[k].sources[source] = std::move(ss);
      new_files[k][source] = files_to_json(mine);
    }
  }

  uint64_t source_counter = 0, shuffle_counter = 0;
  for (const OldRank& o : old) {
    source_counter = std::max(source_counter, o.fill_start.source_rng.counter);
    shuffle_counter = std::max(shuffle_counter, o.fill_start.shuffle_rng.counter);
  }
  std::vector<json> out;
  for (int k = 0; k < new_world; ++k) {
    PipelineState& st = fresh[k];
    st.source_rng = PhiloxStream(old[0].fill_start.source_rng.seed, data_source_rng_stream(k));
    st.source_rng.counter = source_counter;
    st.shuffle_rng = PhiloxStream(old[0].fill_start.shuffle_rng.seed, data_shuffle_rng_stream(k));
    st.shuffle_rng.counter = shuffle_counter;
    for (int r = k; r < n_old; r += new_world) st.stats += old[r].fill_start.stats;
    json config = old[0].config;
    config["rank"] = k;
    config["world_size"] = new_world;
    out.push_back({{"version", old[0].version},
                   {"config", config},
                   {"files", new_files[k]},
                   {"fill_start", st.to_json()},
                   {"next_batch", 0}});
  }
  return out;
}

}  // namespace lingua
