#pragma once
// Parameters to and from safetensors files, by name, and the params.json of a checkpoint. Used by
// the checkpoint layout (train_checkpoint.h), so every path loads exactly the same tensors.
#include <functional>
#include <map>
#include <string>

#include "lingua/config/train_config.h"
#include "lingua/model/param_store.h"

namespace lingua {

// A host tensor over `data` with parameter p's full shape (f32), for safetensors IO.
Tensor param_host_tensor(float* data, const ParamInfo& p);

// Writes every parameter of the store (fp32, its full shape) under its name; every parameter must
// be whole (processes that split them write shards: sharded.h).
void save_params(const ParamStore& store, const std::string& path, const std::map<std::string, std::string>& meta = {});
// Reads every parameter of the store from the file (a split parameter: this process's part of
// the full tensor). A tensor missing from the file, or one whose shape differs from the model's,
// is an error naming the tensor, both shapes and the file (the usual cause: a config that does
// not match the checkpoint).
// `path`: a safetensors file or a step directory, single-file or sharded (CheckpointTensors).
void load_params(ParamStore& store, const std::string& path);
class CheckpointTensors;  // sharded.h
void load_params(ParamStore& store, const CheckpointTensors& tensors);
// The same, but a parameter for which `keep_if_missing` is true keeps its values when the
// checkpoint does not have it (a module being created on a base model's checkpoint).
void load_params(ParamStore& store, const CheckpointTensors& tensors,
                 const std::function<bool(const ParamInfo&)>& keep_if_missing);
// This process's part of tensor `name` (p's placement; p's full shape: an error naming both when
// they differ), read from its own piece when the checkpoint has it (CheckpointTensors::read_local).
void read_local_tensor(const CheckpointTensors& c, const ParamInfo& p, const std::string& name, std::vector<float>& buf);

struct ParamCounts;

// A checkpoint's params.json: the training config plus, under "param_counts", the model's
// parameter counts (total, embedding, active_non_embedding, frozen, and per optimizer group
// other than "default"; informational).
std::string params_json(const TrainConfig& cfg, const ParamCounts& counts);
// The training config of a params.json file: parse_params_json (params_json.h) of its text; errors
// name the file.
TrainConfig read_params_json(const std::string& path);

}  // namespace lingua
