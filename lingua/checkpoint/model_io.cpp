#include "lingua/checkpoint/model_io.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/params_json.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/sharded.h"
#include "lingua/config/config.h"
#include "lingua/model/transformer.h"

namespace lingua {

namespace {

int64_t count_nonfinite(const float* v, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += !std::isfinite(v[i]);
  return bad;
}

}  // namespace

Tensor param_host_tensor(float* data, const ParamInfo& p) {
  Tensor t(data, {p.full_numel()});
  t.ndim = (int)p.shape.size();
  for (int d = 0; d < t.ndim; ++d) t.shape[d] = p.shape[d];
  return t;
}

void save_params(const ParamStore& store, const std::string& path, const std::map<std::string, std::string>& meta) {
  // Host copies made here, freed when written (CUDA keeps no host mirror of the weights).
  const std::vector<float> host = store.host_values();
  std::vector<NamedTensor> ts;
  for (int id : store.ids()) {
    const ParamInfo& p = store.info(id);
    LINGUA_CHECK(p.placement.kind == Placement::whole, "internal error: checkpoint ", path, ": parameter '", p.name,
                 "' is split over processes (their checkpoints are written in shards: sharded.h)");
    const float* values = host.data() + p.offset;
    // A checkpoint is what a run resumes from: never one with NaN or inf weights.
    if (const int64_t bad = count_nonfinite(values, p.full_numel()))
      fail("refusing to write ", path, ": parameter '", p.name, "' has ", bad, " non-finite values (of ",
           p.full_numel(), ")");
    ts.push_back({p.name, param_host_tensor(const_cast<float*>(values), p)});
  }
  write_safetensors(path, ts, meta);
}

void read_local_tensor(const CheckpointTensors& c, const ParamInfo& p, const std::string& name, std::vector<float>& buf) {
  LINGUA_CHECK(c.has(name), "checkpoint ", c.where(), " has no tensor '", name,
               "' that the model needs (does the config match the checkpoint?)");
  if (c.shape(name) != p.shape)
    fail("checkpoint ", c.where(), ": tensor '", name, "' has shape ", shape_str(c.shape(name)),
         " but the model expects ", shape_str(p.shape), " (does the config match the checkpoint?)");
  c.read_local(name, p, buf);
}

void load_params(ParamStore& store, const CheckpointTensors& c) { load_params(store, c, nullptr); }

void load_params(ParamStore& store, const CheckpointTensors& c,
                 const std::function<bool(const ParamInfo&)>& keep_if_missing) {
  std::vector<float> buf;
  for (int id : store.ids()) {
    const ParamInfo& p = store.info(id);
    if (keep_if_missing && !c.has(p.name) && keep_if_missing(p)) continue;
    read_local_tensor(c, p, p.name, buf);
    store.set_param(id, buf.data());
  }
}

void load_params(ParamStore& store, const std::string& path) { load_params(store, CheckpointTensors::open(path)); }

std::string params_json(const TrainConfig& cfg, const ParamCounts& c) {
  nlohmann::json j = nlohmann::json::parse(config_to_json(cfg));
  j["param_counts"] = {{"total", c.total},
                       {"embedding", c.embedding},
                       {"active_non_embedding", c.active_non_embedding},
                       {"frozen", c.frozen},
                       {"groups", c.groups}};
  return j.dump(1) + "\n";
}

TrainConfig read_params_json(const std::string& path) { return parse_params_json(read_text_file(path), path); }

}  // namespace lingua
