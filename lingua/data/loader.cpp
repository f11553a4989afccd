#include "lingua/data/loader.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "lingua/core/error.h"
#include "lingua/data/json_fields.h"

namespace lingua {

namespace {

constexpr int kStateVersion = 1;

// What a state must agree on with the loader that loads it.
nlohmann::json config_fingerprint(const DataConfig& c, const Tokenizer& tok, int rank, int world_size) {
  nlohmann::json sources = nlohmann::json::object();
  for (const auto& [name, weight] : c.sources) sources[name] = weight;
  return {{"sources", sources},         {"batch_size", c.batch_size},       {"seq_len", c.seq_len},
          {"n_views", c.n_views},       {"seed", c.seed},                   {"add_bos", c.add_bos},
          {"add_eos", c.add_eos},       {"prefetch_size", c.prefetch_size}, {"tokenizer", c.tokenizer.name},
          {"n_words", tok.n_words()},   {"rank", rank},                     {"world_size", world_size}};
}

// Chunk files by source, relative to their source directory (so root_dir may move).
nlohmann::json files_fingerprint(const Pipeline& p) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, files] : p.assignments()) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& f : files)
      list.push_back({{"file", std::filesystem::path(f.path).filename().string()},
                      {"line_offset", f.line_offset},
                      {"line_stride", f.line_stride}});
    out[name] = list;
  }
  return out;
}

struct Produced {
  Batch batch;
  PipelinePosition position;
  std::exception_ptr error;
};

}  // namespace

struct DataLoader::Impl {
  DataConfig config;
  nlohmann::json config_json, files_json;
  Pipeline pipeline;
  PipelinePosition handed_out;  // position after the last batch next() returned
  std::exception_ptr error;     // sticky: the pipeline is unusable after one

  // Background producer (load_async).
  std::thread worker;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Produced> queue;  // guarded by mu
  size_t capacity;
  std::atomic<bool> stop{false};

  Impl(const DataConfig& c, const Tokenizer& tok, int rank, int world_size)
      : config(c),
        config_json(config_fingerprint(c, tok, rank, world_size)),
        pipeline(c, tok, rank, world_size),
        handed_out(pipeline.position()),
        capacity(static_cast<size_t>(std::max(1, c.prefetch_size))) {
    files_json = files_fingerprint(pipeline);
  }

  void run() {
    for (;;) {
      Produced p;
      try {
        p.batch = pipeline.next(&stop);
        p.position = pipeline.position();
      } catch (const PipelineCancelled&) {
        return;
      } catch (...) {
        p.error = std::current_exception();
      }
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stop.load() || queue.size() < capacity; });
      if (stop) return;
      const bool failed = static_cast<bool>(p.error);
      queue.push_back(std::move(p));
      cv.notify_all();
      if (failed) return;
    }
  }

  void stop_worker() {
    if (!worker.joinable()) return;
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_all();
    worker.join();
    stop = false;
    queue.clear();
  }

  Batch next() {
    if (error) std::rethrow_exception(error);
    if (!config.load_async) {
      try {
        Batch b = pipeline.next();
        handed_out = pipeline.position();
        return b;
      } catch (...) {
        error = std::current_exception();
        throw;
      }
    }
    if (!worker.joinable()) worker = std::thread([this] { run(); });  // started lazily: load_state may come first
    Produced p;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return !queue.empty(); });
      p = std::move(queue.front());
      queue.pop_front();
    }
    cv.notify_all();
    if (p.error) {
      error = p.error;
      std::rethrow_exception(error);
    }
    handed_out = std::move(p.position);
    return std::move(p.batch);
  }
};

DataLoader::DataLoader(const DataConfig& config, const Tokenizer& tokenizer, int rank, int world_size)
    : impl_(std::make_unique<Impl>(config, tokenizer, rank, world_size)) {}

DataLoader::~DataLoader() { impl_->stop_worker(); }

Batch DataLoader::next() { return impl_->next(); }

nlohmann::json DataLoader::state() const {
  return {{"version", kStateVersion},
          {"config", impl_->config_json},
          {"files", impl_->files_json},
          {"fill_start", impl_->handed_out.fill_start->to_json()},
          {"next_batch", impl_->handed_out.next_batch}};
}

void DataLoader::load_state(const nlohmann::json& state) {
  PipelinePosition position;
  try {
    LINGUA_CHECK(state.is_object(), "data loader state: expected a JSON object, got ", state.type_name());
    const int64_t version = json_int(state, "version", 0, INT32_MAX, "data loader state");
    LINGUA_CHECK(version == kStateVersion, "data loader state: version ", version, " is not the supported ",
                 kStateVersion);
    const auto& saved = state.at("config");
    for (const auto& [key, value] : impl_->config_json.items()) {
      LINGUA_CHECK(saved.contains(key), "data loader state: config key '", key, "' is missing");
      LINGUA_CHECK(saved.at(key) == value, "data loader state was saved with ", key, " = ", saved.at(key).dump(),
                   " but this loader has ", key, " = ", value.dump());
    }
    const auto& files = state.at("files");
    for (const auto& [name, list] : impl_->files_json.items()) {
      LINGUA_CHECK(files.contains(name) && files.at(name) == list, "data loader state: the chunk files of source '",
                   name, "' for this rank changed since the state was saved (saved: ",
                   files.contains(name) ? files.at(name).dump() : "none", ", now: ", list.dump(), ")");
    }
    position.fill_start =
        std::make_shared<const PipelineState>(PipelineState::from_json(json_field(state, "fill_start", "data loader state")));
    position.next_batch = json_int(state, "next_batch", 0, INT32_MAX, "data loader state");
    position.stats = position.fill_start->stats;
  } catch (const nlohmann::json::exception& e) {
    fail("data loader state: malformed JSON: ", e.what());
  }
  impl_->stop_worker();
  impl_->error = nullptr;
  try {
    impl_->pipeline.seek(position);
  } catch (...) {
    impl_->error = std::current_exception();  // half-applied: refuse to produce until a good state
    throw;
  }
  impl_->handed_out = position;
}

DataStats DataLoader::stats() const { return impl_->handed_out.stats; }

}  // namespace lingua
