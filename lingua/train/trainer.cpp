#include "lingua/train/trainer.h"

#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/core/cuda.h"
#include "lingua/config/config.h"
#include "lingua/config/validate.h"
#include "lingua/data/loader.h"
#include "lingua/data/tokenizer.h"
#include "lingua/dist/ddp.h"
#include "lingua/dist/fsdp.h"
#include "lingua/dist/table_parallel.h"
#include "lingua/dist/layout.h"
#include "lingua/dist/world.h"
#include "lingua/train/dist_checkpoint.h"
#include "lingua/eval/tasks.h"
#include "lingua/eval/validation.h"
#include "lingua/exec/executor.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/transformer.h"
#include "lingua/ops/attention/attention.h"
#include "lingua/optim/optimizer.h"
#include "lingua/optim/schedule.h"
#include "lingua/train/nonfinite.h"
#include "lingua/train/run_dir.h"
#include "lingua/train/step_profiler.h"
#include "lingua/train/stop_signals.h"
#include "lingua/train/probe.h"
#include "lingua/train/train_step.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lingua {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

constexpr double kPeakFlops = 989e12;  // H100/H200 dense bf16: the SPEC's MFU denominator

void validate(const TrainConfig& c) {
  LINGUA_CHECK(!c.dump_dir.empty(), "config key 'dump_dir' is required (where config, metrics and checkpoints go)");
  validate_config(c);  // the same checks as every params.json read
  check_training_memory(c);
  check_ffn_config(c.model, &c.optim);
}

std::string human_count(double x) {
  char b[32];
  if (x >= 1e9) std::snprintf(b, sizeof b, "%.2fB", x / 1e9);
  else if (x >= 1e6) std::snprintf(b, sizeof b, "%.2fM", x / 1e6);
  else if (x >= 1e3) std::snprintf(b, sizeof b, "%.1fk", x / 1e3);
  else std::snprintf(b, sizeof b, "%.0f", x);
  return b;
}

std::string human_time(double s) {
  char b[32];
  if (s >= 3600) std::snprintf(b, sizeof b, "%dh%02dm", (int)(s / 3600), (int)std::fmod(s / 60, 60));
  else if (s >= 60) std::snprintf(b, sizeof b, "%dm%02ds", (int)(s / 60), (int)std::fmod(s, 60));
  else std::snprintf(b, sizeof b, "%.0fs", s);
  return b;
}

double max_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / (1024.0 * 1024.0);
}

void append_line(const std::string& path, const json& j) {
  std::ofstream f(path, std::ios::app);
  LINGUA_CHECK(f.good(), "cannot append to ", path);
  f << j.dump() << "\n";
  f.flush();
  LINGUA_CHECK(f.good(), "cannot write to ", path, " (disk full?)");
}

// In-sample unigram entropy of the first `max_tokens` training tokens: the loss of the best
// model that ignores context, a floor any real language model must go below.
double unigram_entropy(const DataConfig& data, const Tokenizer& tok, int vocab, int64_t max_tokens) {
  DataConfig d = data;
  d.load_async = false;
  DataLoader loader(d, tok);
  std::vector<int64_t> counts(vocab, 0);
  int64_t n = 0;
  while (n < max_tokens) {
    Batch b = loader.next();
    for (int32_t t : b.target) counts[t]++;
    n += (int64_t)b.target.size();
  }
  double h = 0;
  for (int64_t c : counts)
    if (c) h -= (double)c / n * std::log((double)c / n);
  return h;
}

std::string last_checkpoint_note(const std::string& root) {
  auto last = latest_checkpoint(root);
  return last ? "the newest checkpoint is " + last->path : "there is no checkpoint yet";
}

struct Run {
  const TrainConfig& cfg;
  Executor& exec;
  AdamW& opt;
  DataLoader& loader;
  Communicator& host;  // the data-parallel ranks' control collectives
  const TrainHooks& hooks;
  const TrainPhase& phase;
  int64_t resplit_from = 0, resplit_step = 0;  // kept in the train states (TrainState)
  double flops = -1;                           // model FLOPs trained so far (< 0: not yet known)
  // What the run carries on from a loaded train state.
  void continue_from(const TrainState& st) {
    resplit_from = st.resplit_from;
    resplit_step = st.resplit_step;
    flops = st.flops;
  }
};

// One process writes the single-file form; several write their shards at once (dist_checkpoint.h).
void save_checkpoint(const Run& r, int64_t step, const std::string& root) {
  TrainState mine{step, r.opt.steps_taken(), r.loader.state(), r.resplit_from, r.resplit_step, r.flops};
  if (r.phase.checkpoint_ramp) mine.growth_ramp = r.phase.checkpoint_ramp(step);
  if (r.host.size() > 1)
    return save_sharded_training_checkpoint(r.host, root, r.cfg, r.exec.model(), r.opt, mine,
                                            r.cfg.checkpoint.dump.keep, r.hooks.before_shard_write);
  save_training_checkpoint(root, r.cfg, r.exec.model(), r.opt, mine);
  prune_checkpoints(root, r.cfg.checkpoint.dump.keep);
}

// After resuming from `dir` on `world` ranks: says so when the checkpoint has another rank count.
void print_resplit_note(const std::string& dir, int world) {
  const int saved = checkpoint_rank_count(dir);
  if (saved == world) return;
  std::fprintf(stderr,
               "lingua: note: %s was saved by %d data-parallel rank%s and this run has %d: the data loaders' "
               "position is re-split (the rest of each source's epoch is read once; the batches the saved ranks had "
               "taken from their current shuffle-buffer fills are read again; README: \"Resuming with another GPU "
               "count\")\n",
               dir.c_str(), saved, saved == 1 ? "" : "s", world);
}

void run_validation(const Run& r, const Tokenizer& tok, int64_t step, const std::string& path, bool quiet) {
  auto res = evaluate_validation(r.exec, tok, r.cfg.data, r.cfg.eval.max_tokens);
  json j = {{"global_step", step}};
  for (auto& [src, v] : res) {
    j[src + "/nll"] = v.nll;
    j[src + "/nll_per_token"] = v.nll_per_token();
    j[src + "/nll_per_char"] = v.nll_per_char();
    j[src + "/bits_per_byte"] = v.bits_per_byte();
    j[src + "/tokens"] = v.tokens;
    j[src + "/avg_seqlen"] = v.avg_seqlen();
    j[src + "/skipped_lines"] = v.stats.skipped();
    if (!quiet)
      std::fprintf(stderr, "eval step %lld | %s: nll/token %.4f  bits/byte %.4f  (%lld tokens)\n", (long long)step,
                   src.c_str(), v.nll_per_token(), v.bits_per_byte(), (long long)v.tokens);
  }
  // Downstream tasks (every rank runs them: a sharded model needs all of them in its forwards).
  for (const TaskConfig& t : r.cfg.eval.tasks) {
    const std::string name = task_name(t);
    const TaskMetrics m = evaluate_task(r.exec, tok, t, r.cfg.data.add_bos,
                                        (int64_t)r.cfg.data.batch_size * r.cfg.data.seq_len);
    for (auto& [k, v] : m) j[name + "/" + k] = v;
    if (!quiet) {
      std::string line;
      for (auto& [k, v] : m)
        if (!k.ends_with("_stderr") && k != "skipped_lines") line += "  " + k + " " + std::to_string(v);
      std::fprintf(stderr, "eval step %lld | task %s:%s\n", (long long)step, name.c_str(), line.c_str());
    }
  }
  if (!path.empty()) append_line(path, j);  // (rank 0's path; the others have none)
}

}  // namespace

std::string checkpoint_root(const TrainConfig& cfg) {
  return cfg.checkpoint.path.empty() ? (fs::path(cfg.dump_dir) / "checkpoints").string() : cfg.checkpoint.path;
}

TrainResult train_phase(const TrainConfig& cfg, const TrainHooks& hooks, const TrainPhase& phase) {
  validate(cfg);
  World& world = process_world();  // the processes of the run (one when not started by a launcher)
  Communicator& host = world.host();
  const bool lead = world.rank() == 0;  // writes metrics, config and checkpoints, and prints
  const ParallelLayout layout = resolve_parallel_layout(cfg.distributed, world.size());
  if (lead && !hooks.quiet)
    for (const std::string& note : layout.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
  if (cfg.threads > 0) {
    omp_set_num_threads(cfg.threads);
    openblas_set_num_threads(cfg.threads);
  }
  const std::string root = checkpoint_root(cfg);
  // Rank 0 creates, checks and locks the dump_dir (one run per dump_dir); the others wait for it.
  std::unique_ptr<RunDir> run_dir;
  std::string setup_error;
  if (lead) {
    try {
      run_dir = std::make_unique<RunDir>(cfg, root);
    } catch (const Error& e) {
      setup_error = e.what();
    }
  }
  if (const std::string e = host.broadcast_string(setup_error, 0); !e.empty())
    fail(lead ? e : "rank 0 could not set up the run: " + e);
  // Every rank writes its checkpoint shard into the step directory rank 0 makes: they must all see
  // the checkpoint root (one filesystem shared by the nodes). Checked now, not at the first save.
  if (host.size() > 1) {
    const std::vector<std::string> seen = host.all_gather_strings(fs::is_directory(root) ? "" : root);
    std::string blind;
    for (size_t r = 0; r < seen.size(); ++r)
      if (!seen[r].empty()) blind += (blind.empty() ? "" : ", ") + std::to_string(r);
    LINGUA_CHECK(blind.empty(), "the checkpoint directory ", root, " that rank 0 created is not visible on rank(s) ",
                 blind, ": with several processes every rank writes its share of each checkpoint there, so "
                 "dump_dir (or checkpoint.path) must be on a filesystem all nodes share");
  }
  StopSignals signals;        // SIGINT/SIGTERM/SIGUSR1/2: stop after this step with a checkpoint
  const std::string metrics_path = lead ? run_dir->metrics_path() : "";
  const std::string eval_path = lead ? run_dir->eval_metrics_path() : "";

  auto tok = make_tokenizer(cfg.data.tokenizer);
  ModelDims dims = resolve_dims(cfg.model, tok->n_words());
  Transformer model(cfg.model, dims);
  if (phase.init_model) phase.init_model(model);  // (whole, before any sharding)
  // Each rank keeps its shards (with HSDP, of its shard group's split) and its tables' columns
  // (groups of layout.tables consecutive ranks); checkpoints are written in pieces by every rank.
  if (layout.fsdp()) shard_block_weights(model, layout.shard, layout.shard_rank(world.rank()));
  if (layout.tables > 1) slice_tables(model, layout.tables, world.rank() % layout.tables);
  const Device device = resolve_device(cfg.device);
  if (device == Device::cuda) select_local_gpu(world);  // before any CUDA work
  model.to_device(device);
  Executor exec(model);
  const std::unique_ptr<LayerHooks> phase_hooks = phase.attach ? phase.attach(exec) : nullptr;
  if (phase_hooks) exec.add_hooks(phase_hooks.get());
  exec.set_grads_in_activations(cfg.model.grads_in_activations && cfg.grad_acc_steps == 1);
  std::unique_ptr<AdamW> opt_owner = make_optimizer(model, cfg.optim);
  AdamW& opt = *opt_owner;
  // Gradients summed over the ranks during the backward (the same init on every rank: the weights
  // are drawn by name from the seed).
  std::unique_ptr<LayerHooks> parallel = attach_data_parallel(layout, exec, opt, world.tensors(device), cfg.grad_acc_steps);
  std::unique_ptr<TableParallel> table_parallel =
      layout.tables > 1 ? std::make_unique<TableParallel>(exec, opt, world.tensors(device), layout.tables) : nullptr;
  DataLoader loader(cfg.data, *tok, world.rank(), world.size());
  const nlohmann::json first_loader_state = loader.state();  // where replayed steps read again
  if (cfg.checkpoint.eval.every > 0)  // fail now, not at the first evaluation
    check_validation_data(cfg.data, *tok, "checkpoint.eval.every = " + std::to_string(cfg.checkpoint.eval.every) +
                                              " (set it to 0 to train without validation): ");
  if (cfg.checkpoint.eval.every > 0) check_tasks(cfg.eval.tasks, "eval.tasks");
  Run run{cfg, exec, opt, loader, host, hooks, phase};
  const bool quiet = hooks.quiet || !lead;

  ParamCounts pc = model.param_counts();
  const int64_t tokens_per_step =
      (int64_t)cfg.grad_acc_steps * cfg.data.batch_size * cfg.data.seq_len * world.size();
  // A model feature may add steps at the end that read the first steps' data again (self-guided
  // training's fixedflop): the run, its LR schedule and its last checkpoint span them.
  const int64_t replayed = model.replayed_steps(), total_steps = phase.end_step > 0 ? phase.end_step : cfg.steps + replayed;
  if (!quiet) {
    // Parameter groups other than the default, as the modules that declared them describe them.
    std::string groups;
    for (const ParamGroup& g : opt.groups()) {
      if (g.name == "default") continue;
      const OptimGroupSpec* spec = model.params().group_spec(g.name);
      groups += ", " + human_count((double)pc.groups[g.name]) + " in " + (spec ? spec->description : g.name) +
                " (optimizer group '" + g.name + "'" + (g.hyper.rows_by_input_ids ? ", row-sparse AdamW)" : ")");
    }
    if (pc.frozen) groups += ", " + human_count((double)pc.frozen) + " frozen";
    std::fprintf(stderr,
                 "lingua: %s | params %s total%s, %s active non-embedding (MFU counts these) | %d layers, dim %d, "
                 "%d heads (%d kv), ffn %d (%s), vocab %d | %lld tokens/step | %s%s\n",
                 cfg.name.c_str(), human_count((double)pc.total).c_str(), groups.c_str(),
                 human_count((double)pc.active_non_embedding).c_str(), dims.n_layers, dims.dim, dims.n_heads,
                 dims.n_kv_heads, dims.hidden, model.describe_ffn().c_str(), dims.vocab, (long long)tokens_per_step,
                 device == Device::cuda ? cuda_device_name().c_str() : "cpu",
                 world.size() > 1 ? (" | " + layout.describe() + " (" + world.host().backend() +
                                      (device == Device::cuda ? " + nccl)" : ")"))
                                        .c_str()
                                  : "");
  }

  TrainResult result;
  int64_t step = 0;
  // Rank 0 picks the checkpoint to resume (refusing another model's, setting corrupt ones aside),
  // then every other rank loads the same one with its own data-loader state.
  std::string resumed_from, resume_error;
  if (lead && phase.grown_from.empty()) {
    try {
      // Another model's checkpoints are refused before anything is loaded (naming the keys).
      if (auto newest = latest_checkpoint(root))
        for (const std::string& change : run_dir->check_resume(newest->path, cfg))
          if (!quiet) std::fprintf(stderr, "lingua: changed since the checkpoint: %s\n", change.c_str());
      // A corrupt newest checkpoint is skipped (and set aside) for the newest one that loads.
      auto load_loader_state = [&](const TrainState& st) { loader.load_state(st.data_loader); };
      if (auto last = load_latest_training_checkpoint(root, model, opt, load_loader_state, 0, world.size())) {
        for (const SkippedCheckpoint& s : last->skipped)
          std::fprintf(stderr,
                       "lingua: warning: checkpoint %s is corrupt (%s); resuming from %s (the corrupt one is kept as %s)\n",
                       s.path.c_str(), s.reason.c_str(), last->path.c_str(), s.moved_to.c_str());
        step = last->state.step;
        resumed_from = last->path;
        run.continue_from(last->state);
      }
    } catch (const std::exception& e) {
      resume_error = e.what();
    }
  }
  if (const std::string e = host.broadcast_string(resume_error, 0); !e.empty())
    fail(lead ? e : "rank 0 could not resume: " + e);
  resumed_from = host.broadcast_string(resumed_from, 0);
  if (!resumed_from.empty() && !lead) {
    const TrainState st = load_training_checkpoint(resumed_from, model, opt, world.rank(), world.size());
    loader.load_state(st.data_loader);
    step = st.step;
    run.continue_from(st);
  }
  if (!resumed_from.empty()) {
    if (!quiet) std::fprintf(stderr, "lingua: resumed from %s (step %lld)\n", resumed_from.c_str(), (long long)step);
    if (!quiet) print_resplit_note(resumed_from, world.size());
  } else if (!phase.grown_from.empty()) {
    // The model just grew (init_model): the data reads on from the source's checkpoint.
    const std::optional<TrainState> st = read_train_state(phase.grown_from, world.rank(), world.size());
    LINGUA_CHECK(st.has_value(), phase.grown_from, " has no data-loader state to continue from");
    loader.load_state(st->data_loader);
    step = phase.first_step;
    run.continue_from(*st);
    if (phase.init_optimizer) phase.init_optimizer(model, opt);
    if (phase.prepare) {
      const int64_t read = phase.prepare(exec, loader);
      if (run.flops >= 0) run.flops += (double)read * model.flops_per_token(cfg.data.seq_len);
    }
  } else if (!cfg.checkpoint.init_ckpt_path.empty() && cfg.checkpoint.continue_training_from_init) {
    // Another run's training goes on in this dump_dir: weights, moments, step and data position.
    const std::string from = resolve_checkpoint_dir(cfg.checkpoint.init_ckpt_path);
    if (lead)
      for (const std::string& change : run_dir->check_resume(from, cfg))
        if (!quiet) std::fprintf(stderr, "lingua: changed since the init checkpoint: %s\n", change.c_str());
    LINGUA_CHECK(has_optimizer_state(from),
                 "checkpoint.continue_training_from_init: ", from,
                 " holds weights only (no optimizer state to continue from); set it to false to start from its weights");
    const TrainState st = load_training_checkpoint(from, model, opt, world.rank(), world.size());
    loader.load_state(st.data_loader);
    step = st.step;
    run.continue_from(st);
    if (!quiet) std::fprintf(stderr, "lingua: continuing the run of %s (step %lld)\n", from.c_str(), (long long)step);
    if (!quiet) print_resplit_note(from, world.size());
  } else if (!cfg.checkpoint.init_ckpt_path.empty()) {
    // A step directory, a weights file, or a dump_dir / checkpoint root (its newest checkpoint).
    const std::string& given = cfg.checkpoint.init_ckpt_path;
    const std::string from = fs::is_directory(given) ? resolve_checkpoint_dir(given) : given;
    load_weights(model, from);
    if (!quiet) std::fprintf(stderr, "lingua: initialised weights from %s\n", from.c_str());
    if (!quiet && !phase.checkpoint_ramp && fs::is_directory(from) && checkpoint_ramp(from))
      std::fprintf(stderr, "lingua: note: %s was written while a G_random ramp ran; this run starts from its weights "
                   "whole (every m = 1). checkpoint.continue_training_from_init=true continues its run, ramp "
                   "included\n", from.c_str());
    const bool grown = fs::exists(fs::path(from) / CheckpointFiles::growth);
    if (cfg.checkpoint.init_data_state.value_or(grown)) {
      const std::optional<TrainState> st =
          fs::is_directory(from) ? read_train_state(from, world.rank(), world.size()) : std::nullopt;
      LINGUA_CHECK(st.has_value(), "checkpoint.init_data_state: ", from, " has no data-loader state (",
                   CheckpointFiles::train_state(0), "); set checkpoint.init_data_state=false to start the data anew");
      loader.load_state(st->data_loader);
      if (!quiet)
        std::fprintf(stderr, "lingua: the data continues where the run of %s stopped (its step %lld): what its model "
                     "saw is not read again; optimizer and schedule start afresh\n", from.c_str(), (long long)st->step);
    }
  } else if (!cfg.model.create_module_name.empty()) {
    fail("config key 'model.create_module_name' (", cfg.model.create_module_name,
         ") trains a module on a frozen base model, but there is none: set checkpoint.init_ckpt_path to the base "
         "model's checkpoint");
  }
  // Module rows lengthen the attention's sequences: cuDNN may not take the new length.
  if (const ModuleTokens* mt = model.module_tokens(); mt && device == Device::cuda && !quiet && mt->prefix_rows() > 0) {
    const int64_t S = cfg.data.seq_len + mt->prefix_rows();
    const std::string why = attention_cudnn_refusal(S, dims.head_dim, true);
    if (!why.empty() && attention_cudnn_refusal(cfg.data.seq_len, dims.head_dim, true).empty())
      std::fprintf(stderr, "lingua: warning: the %d module rows make each sequence %lld rows, and cuDNN's attention "
                   "backward does not take that (%s): it runs on our own kernels, several times slower; module rows "
                   "that keep seq_len + rows a multiple of 128 (model.module_seq_len) avoid it\n",
                   mt->prefix_rows(), (long long)S, why.c_str());
  }
  if (const ModuleTokens* mt = model.module_tokens(); mt && !quiet)
    std::fprintf(stderr, "lingua: module tokens: %d rows each, module_agg %s; running %s%s\n", mt->rows_per_module(),
                 cfg.model.module_agg.c_str(), mt->enabled().empty() ? "none" : "",
                 [&] {
                   std::string s;
                   for (const std::string& n : mt->enabled()) s += (s.empty() ? "" : ", ") + n;
                   if (!mt->created().empty()) s += " (training " + mt->created() + " alone; the rest is frozen)";
                   return s;
                 }()
                     .c_str());
  result.start_step = step;
  if (phase.at_step) phase.at_step(step);
  model.begin_step(step);  // (parameters a model feature adds or drops over the run follow the step)
  if (replayed > 0 && !quiet)
    std::fprintf(stderr, "lingua: %lld steps: the %lld configured, then %lld that read the data of steps 1-%lld again\n",
                 (long long)total_steps, (long long)cfg.steps, (long long)replayed, (long long)replayed);
  if (model.work_varies_per_step() && cfg.cuda_graph && device == Device::cuda && !quiet)
    std::fprintf(stderr, "lingua: note: the model's work differs from step to step for now (parameters skipped at "
                         "random), so those steps run without a CUDA graph\n");
  if (lead) {
    run_dir->write_config(phase.run_config ? *phase.run_config : cfg);
    if (const int64_t dropped = run_dir->truncate_metrics(step); dropped > 0 && !quiet)
      std::fprintf(stderr, "lingua: dropped %lld metrics lines of steps after %lld (logged before the restart)\n",
                   (long long)dropped, (long long)step);
  }
  if (cfg.logging.unigram_baseline_tokens > 0 && lead) {
    result.unigram_entropy = unigram_entropy(cfg.data, *tok, dims.vocab, cfg.logging.unigram_baseline_tokens);
    if (!quiet)
      std::fprintf(stderr, "lingua: unigram entropy of the training data: %.4f nats/token (context-free floor)\n",
                   result.unigram_entropy);
  }

  const float loss_scale = 1.0f / (float)tokens_per_step;  // the mean over every rank's tokens
  const std::string gpus =
      world.size() > 1 ? " on " + std::to_string(world.size()) + (device == Device::cuda ? " GPUs" : " processes") : "";
  int64_t skipped_lines_reported = 0;  // printed again only when the count grows
  auto run_start = Clock::now();
  int64_t total_tokens = step * tokens_per_step;
  // (A checkpoint without the count: as if every step so far had this model's FLOPs per token.)
  if (run.flops < 0) run.flops = (double)step * tokens_per_step * model.flops_per_token(cfg.data.seq_len);
  const int64_t first_step = step;
  ProfilingConfig profiling = cfg.profiling;
  profiling.run = profiling.run && lead;  // one trace, of rank 0
  StepProfiler profiler(profiling, cfg.dump_dir, device, first_step);
  TrainStep train_step(exec, opt, cfg.cuda_graph);
  std::unique_ptr<Probe> probe;
  if (cfg.probe_freq.value_or(0) > 0)
    probe = std::make_unique<Probe>(cfg.dump_dir + "/probe/probe." + std::to_string(world.rank()) + ".jsonl");
  int64_t skipped_steps = 0, skipped_in_a_row = 0, saved_step = -1;
  int stop_signal = 0;
  // A stop signal, agreed over the ranks before each step, so that they all stop at the same one.
  auto stop_requested = [&] {
    stop_signal = (int)host.all_reduce((double)signals.requested(), ReduceOp::max);
    return stop_signal != 0;
  };
  if (hooks.at_start) hooks.at_start(exec);
  while (step < total_steps && !stop_requested()) {
    if (replayed > 0 && step == cfg.steps) loader.load_state(first_loader_state);
    const double flops_per_token = model.flops_per_token(cfg.data.seq_len);  // of this step
    const double hw_flops_per_token = model.hardware_flops_per_token(cfg.data.seq_len);
    const std::map<std::string, double> model_metrics = model.step_metrics();
    profiler.before_step(step);
    auto t0 = Clock::now();
    double data_time = 0;
    std::vector<Batch> batches;
    std::vector<MicroBatch> micro;
    for (int a = 0; a < cfg.grad_acc_steps; ++a) {
      auto td = Clock::now();
      batches.push_back(loader.next());
      data_time += seconds_since(td);
    }
    for (const Batch& b : batches) micro.push_back({b.input.data(), b.target.data(), b.batch_size, b.seq_len});
    // LambdaLR: updates made so far (a model that grew restarts its schedule at the growth step)
    const double lr_mult = lr_multiplier(cfg.optim, step - phase.first_step, total_steps - phase.first_step);
    StepReport rep;
    LossSum l = train_step.run(micro, loss_scale, lr_mult, &rep);
    if (world.size() > 1) {  // the loss over every rank's tokens
      double sums[2] = {l.nll, (double)l.tokens};
      host.all_reduce(sums, 2, ReduceOp::sum);
      l.nll = sums[0];
      l.tokens = (int64_t)sums[1];
    }
    double loss = l.nll / std::max<int64_t>(1, l.tokens);
    // Read with the loss (the GPU is already done): a non-finite norm means AdamW skipped the step.
    const std::map<std::string, double> norms = opt.last_grad_norms();
    if (!step_is_finite(loss, norms)) {
      const std::string what = describe_nonfinite(model.params(), loss, norms);
      opt.set_steps_taken(opt.steps_taken() - 1);  // not applied: bias corrections go on from the last one
      if (cfg.optim.on_nonfinite == "stop")
        fail("step ", step + 1, " is not finite: ", what, ". The step was not applied and no checkpoint holds it; ",
             last_checkpoint_note(root), ". Try a lower optim.lr or a longer optim.warmup, or ",
             "optim.on_nonfinite=skip to skip such steps");
      ++skipped_steps;
      if (++skipped_in_a_row > cfg.optim.max_consecutive_skips)
        fail(skipped_in_a_row, " steps in a row were not finite (optim.max_consecutive_skips is ",
             cfg.optim.max_consecutive_skips, "), the last one step ", step + 1, ": ", what);
      if (!quiet)
        std::fprintf(stderr, "lingua: warning: skipped step %lld (not applied): %s\n", (long long)step + 1,
                     what.c_str());
    } else {
      skipped_in_a_row = 0;
    }
    ++step;
    if (phase.at_step) phase.at_step(step);
    model.begin_step(step);
    if (profiler.after_step(step) && !quiet)
      std::fprintf(stderr, "lingua: profile written to %s\n%s", profiler.trace_path().c_str(), profiler.summary().c_str());
    total_tokens += tokens_per_step;
    run.flops += flops_per_token * (double)tokens_per_step;
    result.losses.push_back(loss);
    double iter_time = seconds_since(t0);
    if (probe && step % *cfg.probe_freq == 0)  // (after the timing: the probe pass is not the step's)
      probe->run(exec, micro[0].tokens, micro[0].targets, micro[0].B, micro[0].T, step);

    if (step % cfg.logging.freq == 0 || step == total_steps || step == first_step + 1) {
      double wps = tokens_per_step / iter_time;
      const double grad_norm = norms.at("default");
      DataStats ds = loader.stats();
      json m = {{"global_step", step},
                {"acc_step", cfg.grad_acc_steps},
                {"speed/wps", wps},
                {"speed/FLOPS", wps * flops_per_token},
                {"speed/mfu", wps * flops_per_token / kPeakFlops},
                {"speed/hfu", wps * hw_flops_per_token / kPeakFlops},
                {"speed/curr_iter_time", iter_time},
                {"speed/data_load_time", data_time},
                {"optim/grad_norm", grad_norm},
                {"optim/lr", rep.lr.at("default")},
                {"optim/total_tokens", total_tokens},
                {"optim/total_flops", run.flops},
                {"optim/skipped_steps", skipped_steps},
                {"memory/max_active_gib",
                 device == Device::cuda
                     ? cuda_peak_memory() / double(1 << 30)
                     : (double)exec.host_training_bytes() / (1 << 30)},
                {"memory/max_rss_gib", max_rss_gib()},
                {"data/documents", ds.documents},
                {"data/skipped_lines", ds.skipped()},
                {"data/bad_json", ds.bad_json},
                {"data/missing_text", ds.missing_text},
                {"data/invalid_utf8", ds.invalid_utf8},
                {"loss/out", loss}};
      for (auto& [key, value] : model_metrics) m[key] = value;
      for (auto& [group, norm] : norms)  // other groups: optim/<group>_grad_norm, optim/<group>_lr
        if (group != "default") {
          m["optim/" + group + "_grad_norm"] = norm;
          m["optim/" + group + "_lr"] = rep.lr.at(group);
        }
      if (lead) append_line(metrics_path, m);
      if (!quiet) {
        double elapsed = seconds_since(run_start);
        double eta = elapsed / (step - first_step) * (total_steps - step);
        std::fprintf(stderr, "step %lld/%lld | loss %.4f | grad %.3f | lr %.2e | %s tok/s%s | ETA %s\n",
                     (long long)step, (long long)total_steps, loss, grad_norm, rep.lr.at("default"),
                     human_count(wps).c_str(), gpus.c_str(), human_time(eta).c_str());
        if (ds.skipped() > skipped_lines_reported) {
          std::fprintf(stderr, "lingua: data: skipped %s so far under %s\n", ds.skipped_summary().c_str(),
                       cfg.data.root_dir.c_str());
          skipped_lines_reported = ds.skipped();
        }
      }
    }
    // Every rank evaluates (a sharded model's forward is collective); rank 0 writes the results.
    if (cfg.checkpoint.eval.every > 0 && step % cfg.checkpoint.eval.every == 0)
      run_validation(run, *tok, step, eval_path, quiet);
    bool dump = (cfg.checkpoint.dump.every > 0 && step % cfg.checkpoint.dump.every == 0) || step == total_steps;
    if (dump) {
      save_checkpoint(run, step, root);
      saved_step = step;
    }
    if (hooks.after_step && !hooks.after_step(step)) {
      result.stopped_by_hook = true;
      break;
    }
  }
  if (const int sig = stop_signal) {
    result.stop_signal = sig;
    if (step > first_step && saved_step != step) save_checkpoint(run, step, root);
    if (!quiet)
      std::fprintf(stderr, "lingua: stopped by %s at step %lld; checkpoint of step %lld in %s (run again to resume)\n",
                   signal_name(sig), (long long)step, (long long)step, root.c_str());
  }
  result.final_step = step;
  result.graph_captures = train_step.captures();
  if (hooks.at_end) hooks.at_end(exec);
  return result;
}

}  // namespace lingua
