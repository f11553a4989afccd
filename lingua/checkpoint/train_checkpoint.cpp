#include "lingua/checkpoint/train_checkpoint.h"

#include <charconv>
#include <cstdio>
#include <filesystem>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/sharded.h"
#include "lingua/core/cuda.h"
#include "lingua/data/resplit.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lingua {

std::string CheckpointFiles::train_state(int rank) {
  char b[64];
  std::snprintf(b, sizeof b, "train_state_%05d.json", rank);
  return b;
}

std::string CheckpointFiles::moment(int which, const std::string& param) {
  return (which == 0 ? "exp_avg." : "exp_avg_sq.") + param;
}

void save_training_checkpoint(const std::string& root, const TrainConfig& cfg, const Transformer& model,
                              const AdamW& opt, const std::vector<TrainState>& states) {
  LINGUA_CHECK(!states.empty(), "internal error: a checkpoint without a train state");
  save_checkpoint_dir(root, states[0].step, [&](const std::string& dir) {
    const ParamStore& s = model.params();
    save_params(s, dir + "/" + CheckpointFiles::weights, {{"format", "lingua.cpp"}});
    // Host copies of the moments, made for the write and freed after it.
    std::vector<std::vector<float>> host;
    std::vector<NamedTensor> moments;
    for (int id : s.ids()) {
      if (!s.trainable(id)) continue;
      host.push_back(opt.host_m(id));
      host.push_back(opt.host_v(id));
    }
    size_t k = 0;
    for (int id : s.ids()) {
      if (!s.trainable(id)) continue;
      const ParamInfo& p = s.info(id);
      for (int which = 0; which < 2; ++which, ++k)
        moments.push_back({CheckpointFiles::moment(which, p.name), param_host_tensor(host[k].data(), p)});
    }
    write_safetensors(dir + "/" + CheckpointFiles::optimizer, moments);
    write_text_file_atomic(dir + "/" + CheckpointFiles::params, params_json(cfg, model.param_counts()));
    for (size_t r = 0; r < states.size(); ++r)
      write_text_file_atomic(dir + "/" + CheckpointFiles::train_state((int)r), train_state_json(states[r]));
  });
}

bool has_optimizer_state(const CheckpointTensors& c) {
  for (const std::string& name : c.names())
    if (name.rfind("exp_avg", 0) == 0) return true;
  return false;
}

bool has_optimizer_state(const std::string& dir) { return has_optimizer_state(CheckpointTensors::open(dir)); }

int checkpoint_rank_count(const std::string& dir) {
  int n = 0;
  while (fs::exists(fs::path(dir) / CheckpointFiles::train_state(n))) ++n;
  return n;
}

namespace {

// The train state of rank `rank` of `world` from a checkpoint of `saved` != world ranks: rank 0's,
// with the data-loader states of all of them re-split over `world` (lingua/data/resplit.h).
TrainState resplit_train_state(const std::string& dir, int saved, int rank, int world) {
  std::vector<json> loaders;
  TrainState first;
  for (int r = 0; r < saved; ++r) {
    const std::string path = dir + "/" + CheckpointFiles::train_state(r);
    TrainState t = parse_train_state(read_text_file(path), path);
    if (r == 0) first = t;
    LINGUA_CHECK(t.step == first.step && t.optimizer_steps == first.optimizer_steps, path, " is at step ", t.step,
                 " (optimizer steps ", t.optimizer_steps, ") but ", CheckpointFiles::train_state(0), " at step ",
                 first.step, " (", first.optimizer_steps, ")");
    loaders.push_back(std::move(t.data_loader));
  }
  try {
    first.data_loader = resplit_loader_states(loaders, world).at(rank);
  } catch (const Error& e) {
    fail("checkpoint ", dir, ": re-splitting the data loader states of its ", saved, " ranks over ", world, ": ",
         e.what());
  }
  first.resplit_from = saved;
  first.resplit_step = first.step;
  return first;
}

}  // namespace

std::optional<TrainState> read_train_state(const std::string& dir, int rank, int world) {
  LINGUA_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " is not in [0, world ", world, ")");
  const int saved = checkpoint_rank_count(dir);
  if (saved == 0) return std::nullopt;
  if (saved == world) {
    const std::string path = dir + "/" + CheckpointFiles::train_state(rank);
    return parse_train_state(read_text_file(path), path);
  }
  return resplit_train_state(dir, saved, rank, world);
}

TrainState load_training_checkpoint(const std::string& dir, Transformer& model, AdamW& opt, int rank, int world) {
  // Read the train state first: a bad one fails before the model is touched.
  const std::optional<TrainState> st = read_train_state(dir, rank, world);
  LINGUA_CHECK(st.has_value(), "checkpoint ", dir, " has no ", CheckpointFiles::train_state(rank),
               " (a weights-only checkpoint: load it with checkpoint.init_ckpt_path)");
  const TrainState t = *st;
  model.begin_step(t.step);  // the parameters the model has at that step (self-guided training's guides)
  ParamStore& s = model.params();
  const CheckpointTensors c = CheckpointTensors::open(dir);
  LINGUA_CHECK(has_optimizer_state(c), "checkpoint ", dir,
               " holds weights only, no optimizer state (load it with checkpoint.init_ckpt_path)");
  load_params(s, c);
  std::vector<float> m, v;
  for (int id : s.ids()) {
    if (!s.trainable(id)) continue;
    const ParamInfo& p = s.info(id);
    read_local_tensor(c, p, CheckpointFiles::moment(0, p.name), m);
    read_local_tensor(c, p, CheckpointFiles::moment(1, p.name), v);
    opt.set_moments(id, m.data(), v.data());
  }
  opt.set_steps_taken(t.optimizer_steps);
  return t;
}

std::optional<ResumedCheckpoint> load_latest_training_checkpoint(
    const std::string& root, Transformer& model, AdamW& opt, const std::function<void(const TrainState&)>& load_rest,
    int rank, int world) {
  const std::vector<CheckpointEntry> all = list_checkpoints(root);
  if (all.empty()) return std::nullopt;
  ResumedCheckpoint r;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      TrainState st = load_training_checkpoint(it->path, model, opt, rank, world);
      LINGUA_CHECK(st.step == it->step, it->path, "/", CheckpointFiles::train_state(rank), " says step ", st.step,
                   " but the directory is step ", it->step);
      if (load_rest) load_rest(st);
      r.path = it->path;
      r.state = std::move(st);
      break;
    } catch (const std::exception& e) {  // lingua::Error, JSON errors of the train state, ...
      r.skipped.push_back({it->path, e.what(), ""});
    }
  }
  if (r.path.empty()) {
    std::string each;
    for (const SkippedCheckpoint& s : r.skipped) each += "\n  " + s.path + ": " + s.reason;
    fail("none of the ", all.size(), " checkpoints in ", root,
         " can be loaded; not starting from scratch, which would overwrite them (a config that does not "
         "match the checkpoints fails on all of them):",
         each);
  }
  for (SkippedCheckpoint& s : r.skipped) s.moved_to = set_aside_corrupt_checkpoint(s.path);
  return r;
}

std::string save_model_checkpoint(const std::string& root, int64_t step, const TrainConfig& cfg,
                                  const Transformer& model, const std::vector<std::pair<std::string, std::string>>& extra) {
  return save_checkpoint_dir(root, step, [&](const std::string& dir) {
    save_params(model.params(), dir + "/" + CheckpointFiles::weights, {{"format", "lingua.cpp"}});
    write_text_file_atomic(dir + "/" + CheckpointFiles::params, params_json(cfg, model.param_counts()));
    for (auto& [name, content] : extra) write_text_file_atomic(dir + "/" + name, content);
  });
}

void load_weights(Transformer& model, const std::string& dir_or_file) {
  const ModuleTokens* m = model.module_tokens();
  const std::string created = m ? m->created() : "";
  std::string module;
  load_params(model.params(), CheckpointTensors::open(dir_or_file), [&](const ParamInfo& p) {
    return !created.empty() && is_module_param(p.name, &module) && module == created;
  });
}

std::string resolve_checkpoint_dir(const std::string& path) {
  LINGUA_CHECK(fs::exists(path), "checkpoint not found: ", path);
  if (is_complete_checkpoint(path)) return path;
  // A dump_dir (with checkpoints/) or a checkpoint root.
  const std::string root =
      fs::is_directory(fs::path(path) / "checkpoints") ? (fs::path(path) / "checkpoints").string() : path;
  auto last = latest_checkpoint(root);
  LINGUA_CHECK(last.has_value(), "no complete checkpoint in ", path);
  return last->path;
}

int64_t checkpoint_step(const std::string& dir) {
  const std::string name = fs::path(dir).filename().string();
  int64_t step = 0;
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos &&
      std::from_chars(name.data(), name.data() + name.size(), step).ec == std::errc())
    return step;  // (a name too long for int64 falls through to the train state)
  const fs::path st = fs::path(dir) / CheckpointFiles::train_state(0);
  if (fs::exists(st)) {
    json j = json::parse(read_text_file(st.string()), nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer()) return j["step"].get<int64_t>();
  }
  return 0;
}

LoadedModel load_model(const std::string& path, const std::string& tokenizer_path, const std::string& device,
                       const std::function<void(TrainConfig&)>& adjust) {
  LoadedModel m;
  m.checkpoint_dir = resolve_checkpoint_dir(path);
  const std::string params = m.checkpoint_dir + "/" + CheckpointFiles::params;
  m.config = read_params_json(params);
  if (adjust) adjust(m.config);
  if (!tokenizer_path.empty()) m.config.data.tokenizer.path = tokenizer_path;
  m.tokenizer = make_tokenizer(m.config.data.tokenizer);
  ModelDims dims;
  try {
    dims = resolve_dims(m.config.model, m.tokenizer->n_words());
  } catch (const Error& e) {
    fail(params, ": ", e.what());
  }
  m.model = std::make_unique<Transformer>(m.config.model, dims);
  const int64_t step = checkpoint_step(m.checkpoint_dir);
  m.model->begin_step(step);  // the model as it was at that step
  load_weights(*m.model, m.checkpoint_dir);
  m.model->to_device(resolve_device(device));
  m.exec = std::make_unique<Executor>(*m.model);
  if (const std::optional<RecordedRamp> ramp = checkpoint_ramp(m.checkpoint_dir)) {
    m.ramp = make_growth_ramp(*m.model, *ramp, step);
    m.exec->add_hooks(m.ramp.get());
    m.model->begin_step(step);  // (uploads the ramp's m's)
  }
  return m;
}

std::optional<RecordedRamp> checkpoint_ramp(const std::string& dir) {
  const std::string path = (fs::path(dir) / CheckpointFiles::train_state(0)).string();
  if (!fs::exists(path)) return std::nullopt;
  const TrainState st = parse_train_state(read_text_file(path), path);
  if (st.growth_ramp.is_null()) return std::nullopt;
  return parse_ramp_record(st.growth_ramp, path + " (growth_ramp)");
}

}  // namespace lingua
