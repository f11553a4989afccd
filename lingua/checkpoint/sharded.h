#pragma once
// Sharded checkpoints: with several processes, every rank writes its part of the weights and AdamW
// moments into shard_{rank:05d}.safetensors of the step directory, all at once (train/trainer.cpp
// commits the directory only when every rank has written). Every element is written exactly once:
//   whole parameter number i (store order): rank i % world writes it whole, under its name;
//   split parameter (Placement of size S, piece k = placement.rank): held by the ranks r with
//     r % S == k (one per replica); rank k + S * (i % (world / S)) writes it, as
//     "<name>:flat:<k>:<S>" (the local [ceil(numel / S)] values, padding included) or
//     "<name>:cols:<k>:<S>" ([..., C / S]);
//   moments likewise under "exp_avg.<...>" and "exp_avg_sq.<...>" (trainable parameters).
// Each file's metadata holds the full shape of every split tensor it has a piece of
// ("lingua.shape.<name>" = "[a, b]"). CheckpointTensors reads either form (this one, or the
// single-file consolidated.safetensors + optimizer.safetensors) as full tensors by name, so a
// checkpoint saved with N ranks loads with M, any parallelism, and in every command that reads checkpoints.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lingua/checkpoint/safetensors.h"
#include "lingua/model/param_store.h"
#include "lingua/optim/optimizer.h"

namespace lingua {

// "shard_00003.safetensors"
std::string checkpoint_shard_name(int rank);

// Writes rank `rank` of `world`'s part of the store's weights and (opt given) its trainable
// parameters' moments to dir/checkpoint_shard_name(rank) (atomically). Refuses non-finite weights.
// Placements must be consistent with the rule above (a split's size divides world, its piece is
// rank % size), as the data- and table-parallel layers lay them out.
void write_checkpoint_shard(const std::string& dir, const ParamStore& store, const AdamW* opt, int rank, int world);

// The tensors of a checkpoint, whole, by name: "<param>" and "exp_avg[_sq].<param>".
class CheckpointTensors {
 public:
  // A step directory (consolidated.safetensors, with optimizer.safetensors when present, or else
  // its shard_*.safetensors) or one .safetensors file. Fails naming the path when there is none.
  static CheckpointTensors open(const std::string& dir_or_file);

  bool sharded() const { return sharded_; }
  const std::string& where() const { return where_; }  // for messages
  std::vector<std::string> names() const;              // sorted
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const std::vector<int64_t>& shape(const std::string& name) const;
  // dst: a CPU f32 tensor of the full size (any shape). Fails naming the tensor when pieces are missing or
  // overlap, the shapes differ, or a file is corrupt (checksums).
  void read(const std::string& name, const Tensor& dst) const;
  // This process's part of tensor `name` (p.placement, p.numel values into `local`): straight from
  // its piece when the checkpoint was saved with that placement (a resume on the same layout
  // reads only its share), else from the whole tensor. p.shape must be the stored one.
  void read_local(const std::string& name, const ParamInfo& p, std::vector<float>& local) const;

 private:
  struct Piece {
    int file = 0;
    std::string key;  // the tensor's name in the file
    Placement placement;
  };
  struct Entry {
    std::vector<int64_t> shape;
    std::vector<Piece> pieces;
  };
  bool sharded_ = false;
  std::string where_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, Entry> entries_;
};

// Writes the single-file form of a sharded step directory (optimizer.safetensors when it has
// moments, then consolidated.safetensors) from its shards and removes the shards. Each file is
// written atomically and the directory stays loadable throughout (the reader takes the single
// files once consolidated.safetensors is there). Holds every tensor in memory while writing. Returns the number
// of tensors written; a directory that is not sharded is left as it is (0).
int consolidate_checkpoint(const std::string& dir);

}  // namespace lingua
