#pragma once
// The training-data pipeline, stage by stage; each stage has a small serialisable state.
//   SourceReader  the documents of one source's chunk files for one data-parallel rank, forever
//   SourceStream  tokenises them (BOS/EOS) and packs the token stream into windows of seq_len + 1
//                 tokens that cross document boundaries (no document mask, as in Lingua)
//   Pipeline      draws each window's source by weight, fills a shuffle buffer of
//                 prefetch_size * batch_size windows, shuffles it and cuts it into batches
// DataLoader (loader.h) runs a Pipeline on the caller's thread or on a background thread.
// All randomness is PhiloxStream, so an RNG state is (seed, stream, counter).
#include <atomic>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lingua/config/train_config.h"
#include "lingua/core/philox.h"
#include "lingua/data/jsonl.h"
#include "lingua/data/tokenizer.h"

namespace lingua {

// One micro-batch of packed windows.
struct Batch {
  int batch_size = 0, seq_len = 0;
  std::vector<int32_t> input;   // [batch_size, seq_len] row-major: tokens 0..T-1 of each window
  std::vector<int32_t> target;  // [batch_size, seq_len]: tokens 1..T, i.e. input shifted by one
  bool operator==(const Batch&) const = default;
};

// The lines of one chunk file that a rank reads: those with line % line_stride == line_offset
// (lines counted from 0, blank and malformed ones included).
struct ChunkAssignment {
  std::string path;
  int64_t line_offset = 0;
  int64_t line_stride = 1;
  bool operator==(const ChunkAssignment&) const = default;
};

// Splits the sorted chunk files of a source over world_size data-parallel ranks so that every line
// of every chunk is read by exactly one rank per epoch. With C chunks and W ranks:
//   C >= W: rank r reads the whole chunks r, r+W, r+2W, ... (Lingua drops the chunks beyond W).
//   C <  W: rank r reads chunk r % C and shares it with the other ranks q with q % C == r % C:
//           with g such ranks, each reads every g-th line, starting at line r / C (Lingua's
//           block_size/offset scheme, generalised to W not a multiple of C).
std::vector<ChunkAssignment> assign_chunks(const std::vector<std::string>& chunk_files, int rank, int world_size);

// The Philox streams of rank `rank`'s source draws and shuffles (both seeded with data.seed).
uint32_t data_source_rng_stream(int rank);
uint32_t data_shuffle_rng_stream(int rank);

// Lines of one chunk file that ranks of an earlier run (another rank count) read in the current
// epoch: line l with l % stride == offset and (end < 0 || l < end). See resplit.h.
struct ReadLines {
  int64_t stride = 1;
  int64_t offset = 0;  // in [0, stride)
  int64_t end = -1;    // lines before it; -1: to the end of the file
  bool contains(int64_t line) const { return line % stride == offset && (end < 0 || line < end); }
  bool operator==(const ReadLines&) const = default;
};

struct SourceReaderState {
  int64_t file_index = 0;  // into the rank's ChunkAssignment list
  int64_t offset = 0;      // byte offset of the next line in that file
  int64_t line = 0;        // number (from 0) of that line in its file
  int64_t epoch = 0;       // completed passes over the rank's files
  // Lines of this epoch read before a re-split, by chunk file name (not path): skipped until the
  // epoch ends, then dropped. Empty (and absent from the JSON) unless made by resplit.h.
  std::map<std::string, std::vector<ReadLines>> already_read;
  bool operator==(const SourceReaderState&) const = default;
  nlohmann::json to_json() const;
  static SourceReaderState from_json(const nlohmann::json& j);
};

// Stage 1: reads its chunk assignments in order, cycling forever (epoch += 1 per pass); lines in
// the state's already_read are passed over like another rank's (a file read whole is not opened).
class SourceReader {
 public:
  SourceReader(std::string source, std::vector<ChunkAssignment> files);
  // The next document into *text; skipped lines are counted in *stats. Fails naming the source
  // when a whole pass over its files holds no document (else it would spin forever).
  void next_document(std::string* text, DataStats* stats);
  const SourceReaderState& state() const { return state_; }
  // Fails when the state does not fit the files (index out of range, offset past the end).
  void set_state(const SourceReaderState& state);
  const std::vector<ChunkAssignment>& files() const { return files_; }

 private:
  void open_current();
  void next_file();               // past the end of the current file (maybe into the next epoch)
  bool current_read_whole() const;  // already_read holds every line of ours in the current file
  std::string source_;
  std::vector<ChunkAssignment> files_;
  SourceReaderState state_;
  const std::vector<ReadLines>* read_here_ = nullptr;  // already_read of the open file, if any
  std::ifstream in_;
  std::string line_;
  int64_t wraps_without_document_ = 0;  // 2 means a full pass had none
};

struct SourceStreamState {
  SourceReaderState reader;
  std::vector<int32_t> tokens;  // tokenised but not yet emitted: the tail of the last document read
  bool operator==(const SourceStreamState&) const = default;
  nlohmann::json to_json() const;
  static SourceStreamState from_json(const nlohmann::json& j);
};

// Stage 2: tokenises the documents of a SourceReader into one token stream and cuts it into
// consecutive, non-overlapping windows; leftover tokens wait for the next window.
class SourceStream {
 public:
  // The tokenizer must outlive the stream.
  SourceStream(std::string source, std::vector<ChunkAssignment> files, const Tokenizer& tokenizer, bool add_bos,
               bool add_eos);
  // Appends the next `window` tokens of the stream to *out.
  void next_window(int window, std::vector<int32_t>* out, DataStats* stats);
  SourceStreamState state() const;
  void set_state(const SourceStreamState& state);
  const std::vector<ChunkAssignment>& files() const { return reader_.files(); }

 private:
  std::string source_;
  SourceReader reader_;
  const Tokenizer* tokenizer_;
  bool add_bos_, add_eos_;
  std::vector<int32_t> buffer_;  // tokens [head_, end) not yet emitted
  size_t head_ = 0;
  std::string text_;
};

// State of the pipeline between two shuffle-buffer fills.
struct PipelineState {
  std::map<std::string, SourceStreamState> sources;  // by source name
  PhiloxStream source_rng;                           // draws each window's source
  PhiloxStream shuffle_rng;                          // permutes each fill
  DataStats stats;
  bool operator==(const PipelineState&) const;
  nlohmann::json to_json() const;
  static PipelineState from_json(const nlohmann::json& j);
};

// Where the pipeline stands after a batch: the next batch is batch `next_batch` of the fill that
// starts at `fill_start` (next_batch is 0 at a fill boundary). A fill is replayed from its start
// state rather than stored, so the state stays small (the fill itself is
// prefetch_size * batch_size * (seq_len + 1) tokens).
struct PipelinePosition {
  std::shared_ptr<const PipelineState> fill_start;
  int64_t next_batch = 0;
  DataStats stats;  // counters as of the fill that held the last batch (a fill is read at once)
};

// Thrown by Pipeline::next when its cancel flag is raised (the loader is shutting down).
struct PipelineCancelled {};

// Stage 3 and the whole chain for one rank. Not thread-safe: one thread at a time.
class Pipeline {
 public:
  // Validates the config and the corpus layout (root_dir, source directories, chunk files,
  // weights); errors name the key, source and path. The tokenizer must outlive the pipeline.
  Pipeline(const DataConfig& config, const Tokenizer& tokenizer, int rank, int world_size);
  // The next batch. Throws PipelineCancelled if *cancel becomes true during a fill.
  Batch next(const std::atomic<bool>* cancel = nullptr);
  // After the last batch of next() (before any: the start).
  const PipelinePosition& position() const { return position_; }
  // Continue from a position (as returned by position(), possibly of another Pipeline with the
  // same config); fails when it does not fit this pipeline's sources and files.
  void seek(const PipelinePosition& position);
  int64_t batches_per_fill() const { return config_.prefetch_size; }
  // This rank's chunk assignments, by source.
  std::map<std::string, std::vector<ChunkAssignment>> assignments() const;

 private:
  PipelineState live_state() const;
  void set_live_state(const PipelineState& state);
  void fill(const std::atomic<bool>* cancel);

  DataConfig config_;
  int n_words_;                          // the tokenizer's vocabulary size
  std::vector<std::string> names_;       // source names, sorted
  std::vector<double> cumulative_;       // normalised cumulative weights, per name
  std::vector<SourceStream> streams_;    // per name
  PhiloxStream source_rng_, shuffle_rng_;
  DataStats stats_;
  std::vector<int32_t> fill_tokens_;     // [n_windows, seq_len + 1], in drawing order
  std::vector<int64_t> order_;           // shuffled window indices
  bool fill_valid_ = false;
  std::shared_ptr<const PipelineState> fill_start_;
  int64_t next_batch_ = 0;
  PipelinePosition position_;
};

}  // namespace lingua
