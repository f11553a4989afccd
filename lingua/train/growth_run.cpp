#include "lingua/train/growth_run.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/data/tokenizer.h"
#include "lingua/dist/layout.h"
#include "lingua/dist/table_parallel.h"
#include "lingua/dist/world.h"
#include "lingua/data/loader.h"
#include "lingua/exec/growth_learn.h"
#include "lingua/exec/growth_ramp.h"
#include "lingua/model/growth.h"
#include "lingua/train/train_step.h"
#include "lingua/train/trainer.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

// Keys of `over` set onto `base` (mappings merged, anything else replaced).
void merge_into(YAML::Node base, const YAML::Node& over) {
  for (auto it = over.begin(); it != over.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    if (it->second.IsMap() && base[key] && base[key].IsMap()) merge_into(base[key], it->second);
    else base[key] = it->second;
  }
}

std::vector<int> stacking_list_of(const TrainConfig& cfg, const ModelConfig& source) {
  if (cfg.growth.stacking_list) return *cfg.growth.stacking_list;
  LINGUA_CHECK(source.n_layers > 0 && cfg.model.n_layers % source.n_layers == 0, "growth: the target's ",
               cfg.model.n_layers, " layers (model.n_layers) are not a multiple of the source's ", source.n_layers,
               " (growth.source): give the list of source layers, config key 'growth.stacking_list'");
  return default_stacking_list(source.n_layers, cfg.model.n_layers);
}

std::string join_stages(const std::vector<std::string>& stages) {
  std::string s;
  for (const std::string& x : stages) s += (s.empty() ? "" : ", then ") + x;
  return s;
}

// G_random's ramp as the phase's hook: the record's blocks and the units its source lacks enter over
// its steps per stage from its start step; each checkpoint written before every m is 1 keeps the
// record in its train state.
void attach_growth_ramp(TrainPhase& phase, const RecordedRamp& record, bool quiet) {
  auto ramp = std::make_shared<GrowthRamp*>(nullptr);
  phase.attach = [=](Executor& exec) -> std::unique_ptr<LayerHooks> {
    // (Widths the source shares with the model get no stage.)
    std::unique_ptr<GrowthRamp> r = make_growth_ramp(exec.model(), record, record.start);
    if (!quiet && !r->width_stages().empty())
      std::fprintf(stderr, "lingua: growth: G_random's width masks ramp in %s, %lld steps each (every m = 1 "
                   "from step %lld)\n", join_stages(r->width_stages()).c_str(), (long long)record.steps,
                   (long long)r->end_step());
    *ramp = r.get();
    return r;
  };
  phase.at_step = [ramp](int64_t step) { (*ramp)->set_step(step); };
  const nlohmann::json rec = ramp_record(record);
  phase.checkpoint_ramp = [ramp, rec](int64_t step) {
    return *ramp && step < (*ramp)->end_step() ? rec : nlohmann::json();
  };
}

}  // namespace

double grown_norm_eps(const ModelConfig& source, int target_dim) {
  return source.norm_eps * source.dim / target_dim;
}

std::string norm_eps_note(const ModelConfig& source, const ModelConfig& target) {
  if (target.dim == source.dim) return "";
  const double want = grown_norm_eps(source, target.dim);
  if (std::abs(target.norm_eps - want) <= 1e-6 * want) return "";
  char b[320];
  std::snprintf(b, sizeof b, "model.norm_eps is %g; with model.dim %d -> %d the grown model computes the source's "
                "function exactly only with model.norm_eps = %g (the source's %g x %d / %d), else up to the "
                "epsilon's share of the RMS", target.norm_eps, source.dim, target.dim, want, source.norm_eps,
                source.dim, target.dim);
  return b;
}

std::optional<RecordedRamp> read_ramp_record(const std::string& path) {
  if (!fs::exists(path)) return std::nullopt;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  if (!j.contains("ramp")) return std::nullopt;
  return parse_ramp_record(j.at("ramp"), path);
}

namespace {
std::string run_ramp_copy_path(const TrainConfig& cfg) {
  return cfg.dump_dir.empty() ? "" : (fs::path(cfg.dump_dir) / "growth_ramp.json").string();
}
}  // namespace

std::optional<RecordedRamp> run_ramp(const TrainConfig& cfg) {
  // The init checkpoint's record (a step directory, a root, or a weights file in a step directory).
  std::optional<RecordedRamp> init;
  const std::string& given = cfg.checkpoint.init_ckpt_path;
  if (!given.empty() && fs::exists(given)) {
    const std::string from = fs::is_directory(given) ? resolve_checkpoint_dir(given) : given;
    const fs::path dir = fs::is_directory(from) ? fs::path(from) : fs::path(from).parent_path();
    init = read_ramp_record((dir / CheckpointFiles::growth).string());
    // Another run's checkpoint written mid-ramp, continued: its ramp goes on (its train state's).
    if (cfg.checkpoint.continue_training_from_init && fs::is_directory(from))
      if (std::optional<RecordedRamp> mid = checkpoint_ramp(from)) init = mid;
  }
  // The run's copy: what a run resumed in this dump_dir ramps (with or without the init checkpoint).
  const std::string copy_path = run_ramp_copy_path(cfg);
  std::optional<RecordedRamp> copy = copy_path.empty() ? std::nullopt : read_ramp_record(copy_path);
  if (init && copy)
    LINGUA_CHECK(ramp_record(*init) == ramp_record(*copy), "the G_random ramp of ", init->path, " differs from the "
                 "one this run started with (", copy->path, "): another grown checkpoint, or another run's dump_dir; "
                 "use a new dump_dir for a new run");
  return copy ? copy : init;
}

ModelConfig growth_source_model(const TrainConfig& cfg) {
  YAML::Node over;
  try {
    over = YAML::Load(cfg.growth.source.yaml);
  } catch (const YAML::Exception& e) {
    fail("config key 'growth.source': not YAML: ", e.what());
  }
  LINGUA_CHECK(over.IsMap(), "config key 'growth.source': expected a mapping of model keys (e.g. '{n_layers: 6}'), got '",
               cfg.growth.source.yaml, "'");
  YAML::Node model = config_detail::Writer::write(cfg.model);
  merge_into(model, over);
  config_detail::Origins origins;
  origins.file = "growth.source (over model.*)";
  try {
    return config_detail::read_config<ModelConfig>(model, origins, ModelConfig{});
  } catch (const Error& e) {
    fail("config key 'growth.source': ", e.what());
  }
}

TrainConfig growth_source_config(const TrainConfig& cfg) {
  TrainConfig small = cfg;
  small.model = growth_source_model(cfg);
  return small;
}

void check_growth_config(const TrainConfig& cfg) {
  const GrowthConfig& g = cfg.growth;
  LINGUA_CHECK(g.step > 0 && g.step < cfg.steps, "config key 'growth.step' is ", g.step, ": the model grows after a "
               "step in [1, steps) (steps is ", cfg.steps, "); 0 turns growth off");
  LINGUA_CHECK(!g.source.yaml.empty(), "config key 'growth.source' is required with growth.step: the source model's "
               "model.* keys that differ from the target's, e.g. '{n_layers: 6}'");
  LINGUA_CHECK(cfg.model.structured.self_guided.mode == "none",
               "growth.step with model.structured.self_guided: not supported (the guided phase and the growth "
               "step would share one schedule)");
  const ModelConfig source = growth_source_model(cfg);
  // (The width keys that growth may change; n_layers is the depth.)
  const bool wider = source.dim != cfg.model.dim || source.n_heads != cfg.model.n_heads ||
                     source.ffn_dim_multiplier != cfg.model.ffn_dim_multiplier ||
                     source.multiple_of != cfg.model.multiple_of;
  LINGUA_CHECK(source.n_layers != cfg.model.n_layers || wider,
               "config key 'growth.source' (", g.source.yaml, ") gives the same model as model.*: nothing would grow");
  check_growth(source, cfg.model, parse_growth_operator(g.op), stacking_list_of(cfg, source));
  const ParallelLayout layout = resolve_parallel_layout(cfg.distributed, process_world().size());
  if (g.op == "learn")
    LINGUA_CHECK(g.learn_steps >= 1, "config key 'growth.learn_steps' is ", g.learn_steps, ": G_learn needs >= 1");
}

namespace {

// A run from a G_random checkpoint of lingua grow: its ramp from step 0.
TrainResult train_ramped(const TrainConfig& cfg, const TrainHooks& hooks, const RecordedRamp& ramp) {
  World& world = process_world();
  const bool quiet = hooks.quiet || world.rank() != 0;
  for (int l : ramp.layers)
    LINGUA_CHECK(l >= 0 && l < cfg.model.n_layers, ramp.path, ": its G_random ramp names layer ", l,
                 ", but model.n_layers is ", cfg.model.n_layers);
  if (!quiet) {
    std::string layers;
    for (int l : ramp.layers) layers += (layers.empty() ? "" : ", ") + std::to_string(l);
    std::fprintf(stderr, "lingua: growth: the G_random ramp of %s: new layers [%s] ramp in from step %lld, %lld steps "
                 "per stage\n", ramp.path.c_str(), layers.c_str(), (long long)ramp.start, (long long)ramp.steps);
  }
  TrainPhase phase;
  attach_growth_ramp(phase, ramp, quiet);
  // The run keeps its own copy (once its dump_dir is accepted: the phase's hooks attach after that):
  // a resume ramps as it started, with or without the init checkpoint.
  const std::string copy = run_ramp_copy_path(cfg);
  if (world.rank() == 0 && !copy.empty() && !fs::exists(copy)) {
    auto attach = phase.attach;
    phase.attach = [attach, copy, ramp](Executor& exec) {
      write_text_file_atomic(copy, nlohmann::json{{"ramp", ramp_record(ramp)}}.dump(1) + "\n");
      return attach(exec);
    };
  }
  return train_phase(cfg, hooks, phase);
}

}  // namespace

TrainResult train(const TrainConfig& cfg, const TrainHooks& hooks) {
  if (cfg.growth.step <= 0) {
    if (std::optional<RecordedRamp> ramp = run_ramp(cfg)) return train_ramped(cfg, hooks, *ramp);
    return train_phase(cfg, hooks, {});
  }
  // Another run's checkpoint after its growth step, continued here: the grown phase goes on from it.
  std::string continued;
  if (cfg.checkpoint.continue_training_from_init && !cfg.checkpoint.init_ckpt_path.empty() &&
      fs::is_directory(cfg.checkpoint.init_ckpt_path)) {
    const std::string from = resolve_checkpoint_dir(cfg.checkpoint.init_ckpt_path);
    if (checkpoint_step(from) > cfg.growth.step) continued = from;
  }
  if (const std::optional<RecordedRamp> r = run_ramp(cfg); r && continued.empty())
    fail("growth.step with checkpoint.init_ckpt_path a checkpoint under a G_random ramp (", r->path, "): not "
         "supported; grow inside the run (growth.op=random) or train the grown checkpoint without growth.step");
  check_growth_config(cfg);
  World& world = process_world();
  Communicator& host = world.host();
  const bool quiet = hooks.quiet || world.rank() != 0;
  const std::string root = checkpoint_root(cfg);
  const int64_t at = cfg.growth.step;
  // Where the run stands (rank 0's view of the shared checkpoint root, for every rank).
  int64_t newest = -1;
  if (world.rank() == 0)
    if (auto c = latest_checkpoint(root)) newest = c->step;
  newest = (int64_t)host.all_reduce((double)newest, ReduceOp::max);
  if (newest < 0 && !continued.empty()) {
    if (!quiet) std::fprintf(stderr, "lingua: growth: %s is past growth.step: the grown model's training goes on\n",
                             continued.c_str());
    newest = checkpoint_step(continued);  // (the grown phase continues it: train_phase's init branch)
  }

  const TrainConfig small = growth_source_config(cfg);
  const GrowthOperator op = parse_growth_operator(cfg.growth.op);
  const std::vector<int> list = stacking_list_of(cfg, small.model);
  // The source model with the weights of its checkpoint `from`.
  auto source_of = [&](const std::string& from, int vocab) {
    auto source = std::make_unique<Transformer>(small.model, resolve_dims(small.model, vocab));
    load_weights(*source, from);
    return source;
  };
  TrainResult first;
  bool ran_source = false;
  if (newest < at) {
    if (const std::string note = norm_eps_note(small.model, cfg.model); !quiet && !note.empty() &&
        op != GrowthOperator::stack)
      std::fprintf(stderr, "lingua: growth: note: %s\n", note.c_str());
    if (!quiet)
      std::fprintf(stderr, "lingua: growth: steps 1-%lld train the source model (%d layers), then G_%s grows it to "
                   "model.* (%d layers) for steps %lld-%lld\n", (long long)at, small.model.n_layers,
                   growth_operator_name(op), cfg.model.n_layers, (long long)at + 1, (long long)cfg.steps);
    TrainPhase source_phase;
    source_phase.end_step = at;
    source_phase.run_config = &cfg;
    first = train_phase(small, hooks, source_phase);
    ran_source = true;
    // Stopped (a signal, a test's hook): a run started again resumes from the newest checkpoint.
    if (first.final_step < at || first.stop_signal || first.stopped_by_hook) return first;
  }
  TrainPhase grown;
  grown.first_step = at;
  grown.run_config = &cfg;
  // G_random: the new blocks and units ramped in (by step: resumes repeat it); the phase owns it.
  if (op == GrowthOperator::random)
    attach_growth_ramp(grown, {new_layers(list), ramp_steps_or_warmup(cfg.growth.ramp_steps, cfg.optim), at, small.model},
                       quiet);
  if (newest <= at) {  // the grown phase starts now, from the source's checkpoint at the growth step
    const std::string from = (fs::path(root) / checkpoint_dir_name(at)).string();
    LINGUA_CHECK(is_complete_checkpoint(from), "growth: the source model's checkpoint of step ", at, " (", from,
                 ") is missing: it is where the grown model starts (keep it: checkpoint.dump.keep)");
    grown.grown_from = from;
    grown.init_model = [&, from](Transformer& target) {
      const std::unique_ptr<Transformer> source = source_of(from, target.dims().vocab);
      grow_model(*source, target, op, list, (uint64_t)cfg.growth.seed);  // (G_learn: its start)
      if (!quiet)
        std::fprintf(stderr, "lingua: growth: G_%s at step %lld: %d -> %d layers, FFN %d -> %d, from %s\n",
                     growth_operator_name(op), (long long)at, source->n_layers(), target.n_layers(),
                     source->dims().hidden, target.dims().hidden, from.c_str());
    };
    if (cfg.growth.carry_moments)
      grown.init_optimizer = [&, from](const Transformer& target, AdamW& opt) {
        Transformer source(small.model, resolve_dims(small.model, target.dims().vocab));
        std::unique_ptr<AdamW> source_opt = make_optimizer(source, small.optim);
        load_training_checkpoint(from, source, *source_opt);
        const ParamStore& sp = source.params();
        grow_moments(
            source, target, op, list, (uint64_t)cfg.growth.seed,
            [&](int sid) {
              return sp.info(sid).trainable ? Moments{source_opt->host_m(sid), source_opt->host_v(sid)} : Moments{};
            },
            [&](int id, const Moments& mv) {  // (whole moments; a split parameter keeps its part)
              const ParamInfo& p = target.params().info(id);
              if (p.trainable && !mv.m.empty()) opt.set_moments(id, p.held_part(mv.m).data(), p.held_part(mv.v).data());
            });
        opt.set_steps_taken(source_opt->steps_taken());
      };
  }
  if (op == GrowthOperator::learn && newest <= at) {
    const std::string from = grown.grown_from;
    grown.prepare = [&, from](Executor& exec, DataLoader& loader) -> int64_t {
      // FSDP: the split weights' gradients gathered over the shard group (HSDP: one of them; the
      // local shards hold the sums over every rank); tables split over ranks: their column slices
      // over the table group (each slice the sum over every rank). So every rank learns the same map.
      const ParallelLayout layout = resolve_parallel_layout(cfg.distributed, world.size());
      std::unique_ptr<Communicator> group, tables;
      if (layout.hybrid()) group = host.split(layout.replica_rank(world.rank()), layout.shard_rank(world.rank()));
      if (layout.tables > 1) tables = host.split(world.rank() / layout.tables, world.rank() % layout.tables);
      Communicator& shards = group ? *group : host;
      LearnedGrowth::Gather gather;
      if (layout.fsdp() || tables)
        gather = [&shards, &tables](const ParamInfo& p, const std::vector<float>& local) {
          if (p.placement.kind == Placement::column_slice) return gather_column_slices(*tables, p, local);
          std::vector<float> all(local.size() * (size_t)shards.size());
          shards.all_gather(local.data(), all.data(), local.size() * sizeof(float));
          all.resize((size_t)p.full_numel());
          return all;
        };
      LearnedGrowth learn(*source_of(from, exec.model().dims().vocab), exec.model(), list, (uint64_t)cfg.growth.seed,
                          gather);
      int64_t tokens = 0;
      double first = 0, last = 0;
      // (Under DDP and FSDP every rank learns from its own batches; their gradients are summed by
      // the data-parallel hooks, so alpha stays the same everywhere. The loss logged is the ranks' mean.)
      const int ranks = world.size();
      for (int64_t s = 0; s < cfg.growth.learn_steps; ++s) {
        const Batch b = loader.next();
        last = learn.step(exec, b.input.data(), b.target.data(), b.batch_size, b.seq_len, cfg.growth.learn_lr, ranks);
        last = host.all_reduce(last, ReduceOp::sum) / ranks;
        if (s == 0) first = last;
        tokens += (int64_t)b.batch_size * b.seq_len * ranks;
      }
      if (!quiet)
        std::fprintf(stderr, "lingua: growth: G_learn trained its map for %lld steps (loss %.4f -> %.4f, %lld "
                     "tokens)\n", (long long)cfg.growth.learn_steps, first, last, (long long)tokens);
      return tokens;
    };
  }
  TrainResult second = train_phase(cfg, hooks, grown);
  if (!ran_source) return second;
  first.final_step = second.final_step;
  first.losses.insert(first.losses.end(), second.losses.begin(), second.losses.end());
  first.stop_signal = second.stop_signal;
  first.stopped_by_hook = second.stopped_by_hook;
  first.graph_captures += second.graph_captures;
  return first;
}

}  // namespace lingua
