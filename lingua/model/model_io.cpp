#include "lingua/model/model_io.h"

#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/config/config.h"
#include "lingua/model/transformer.h"

namespace lingua {

void save_params(const ParamStore& store, const std::string& path, const std::map<std::string, std::string>& meta) {
  store.download();  // no-op on the CPU
  std::vector<NamedTensor> ts;
  for (int i = 0; i < store.size(); ++i) ts.push_back({store.info(i).name, store.host_param(i)});
  write_safetensors(path, ts, meta);
}

void load_params(ParamStore& store, const std::string& path) {
  SafetensorsFile f = SafetensorsFile::open(path);
  for (int i = 0; i < store.size(); ++i) {
    const ParamInfo& p = store.info(i);
    LINGUA_CHECK(f.has(p.name), "checkpoint ", path, " has no tensor '", p.name,
                 "' that the model needs (does the config match the checkpoint?)");
    const TensorInfo& ti = f.info(p.name);
    if (ti.shape != p.shape) {
      std::string want = "[";
      for (size_t d = 0; d < p.shape.size(); ++d) want += (d ? ", " : "") + std::to_string(p.shape[d]);
      fail("checkpoint ", path, ": tensor '", p.name, "' has shape ", ti.shape_str(), " but the model expects ",
           want, "] (does the config match the checkpoint?)");
    }
    f.read_into(p.name, store.host_param(i));
  }
  store.upload();  // no-op on the CPU
}

std::string params_json(const TrainConfig& cfg, const ParamCounts& c) {
  nlohmann::json j = nlohmann::json::parse(config_to_json(cfg));
  j["param_counts"] = {{"total", c.total},
                       {"embedding", c.embedding},
                       {"stem_tables", c.stem_tables},
                       {"active_non_embedding", c.active_non_embedding}};
  return j.dump(1) + "\n";
}

TrainConfig read_params_json(const std::string& path) {
  const std::string text = read_text_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (j.is_object()) j.erase("param_counts");
  return config_from_json_text<TrainConfig>(j.dump(), path);
}

}  // namespace lingua
