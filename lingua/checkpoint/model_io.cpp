#include "lingua/checkpoint/model_io.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/params_json.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/config/config.h"
#include "lingua/model/transformer.h"

namespace lingua {

namespace {

// Checkpoints hold whole tensors; a parameter split over processes needs the distributed
// checkpoint code (which gathers or reshards it).
void check_whole(const ParamInfo& p, const std::string& path) {
  LINGUA_CHECK(p.placement.kind == Placement::whole, "checkpoint ", path, ": parameter '", p.name,
               "' is split over processes; this checkpoint writer holds whole tensors only");
}

}  // namespace

Tensor param_host_tensor(float* data, const ParamInfo& p) {
  Tensor t(data, {p.numel});
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
    check_whole(p, path);
    // A checkpoint is what a run resumes from: never one with NaN or inf weights.
    int64_t bad = 0;
    for (int64_t i = 0; i < p.numel; ++i) bad += !std::isfinite(host[p.offset + i]);
    if (bad)
      fail("refusing to write ", path, ": parameter '", p.name, "' has ", bad, " non-finite values (of ", p.numel,
           ")");
    ts.push_back({p.name, param_host_tensor(const_cast<float*>(host.data()) + p.offset, p)});
  }
  write_safetensors(path, ts, meta);
}

void load_params(ParamStore& store, const std::string& path) {
  SafetensorsFile f = SafetensorsFile::open(path);
  std::vector<float> buf;
  for (int id : store.ids()) {
    const ParamInfo& p = store.info(id);
    check_whole(p, path);
    LINGUA_CHECK(f.has(p.name), "checkpoint ", path, " has no tensor '", p.name,
                 "' that the model needs (does the config match the checkpoint?)");
    const TensorInfo& ti = f.info(p.name);
    if (ti.shape != p.shape)
      fail("checkpoint ", path, ": tensor '", p.name, "' has shape ", ti.shape_str(), " but the model expects ",
           shape_str(p.shape), " (does the config match the checkpoint?)");
    buf.resize(p.numel);
    f.read_into(p.name, param_host_tensor(buf.data(), p));
    store.set_param(id, buf.data());
  }
}

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
