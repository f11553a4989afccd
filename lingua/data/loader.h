#pragma once
// DataLoader: batches of packed token windows for one data-parallel rank (see pipeline.h for the
// stages). With config.load_async the pipeline runs ahead on a background thread into a bounded
// queue; either way the batches are the same for the same config and seed, and state() resumes
// exactly.
#include <memory>

#include <nlohmann/json.hpp>

#include "lingua/config/train_config.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/pipeline.h"
#include "lingua/data/tokenizer.h"

namespace lingua {

class DataLoader {
 public:
  // Validates the config and corpus layout at once (errors name the key, source, path). Reads
  // data.root_dir/<source>/*.chunk.*.jsonl; chunk files are split over ranks by assign_chunks().
  // The tokenizer must outlive the loader (it is used from the loader's thread).
  DataLoader(const DataConfig& config, const Tokenizer& tokenizer, int rank = 0, int world_size = 1);
  ~DataLoader();  // stops and joins the background thread
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch: input and target [batch_size, seq_len]. Rethrows an error of the pipeline
  // (also one raised on the background thread), and again on every later call.
  Batch next();

  // Resumable state as of the batches handed out so far: a loader given load_state(state())
  // returns the same batches as this one from here on. Holds the pipeline state at the start of
  // the current shuffle-buffer fill plus the index of the next batch in it, and the config it
  // belongs to (sources, weights, sizes, seed, rank, chunk files); JSON-safe (dump/parse).
  nlohmann::json state() const;
  // Continue from a state(); fails naming the key when it was saved under another config, rank or
  // set of chunk files (the loader is then unchanged if the check failed before touching the
  // pipeline, else next() keeps failing until a good load_state). Drops batches loaded ahead.
  void load_state(const nlohmann::json& state);

  // Counters as of the last batch handed out (the pipeline reads a whole fill at a time).
  DataStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lingua
