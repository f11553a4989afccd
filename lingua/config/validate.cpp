#include "lingua/config/validate.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "lingua/config/config.h"

namespace lingua {

namespace {

using config_detail::Visitable;

// Every floating-point value finite (a parsed config cannot hold NaN or inf, a built one can).
struct FiniteCheck {
  std::string prefix;
  template <class T>
  void operator()(const char* key, T& m, const char*) {
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if constexpr (Visitable<T, FiniteCheck>) {
      FiniteCheck sub{path};
      m.visit(sub);
    } else if constexpr (std::is_floating_point_v<T>) {
      check(path, m);
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      if (m) check(path, *m);
    } else if constexpr (std::is_same_v<T, std::map<std::string, double>>) {
      for (auto& [k, x] : m) check(path + "." + k, x);
    }
  }
  void choice(const char*, std::string&, std::initializer_list<const char*>, const char*) {}
  static void check(const std::string& path, double x) {
    LINGUA_CHECK(std::isfinite(x), "config key '", path, "' must be a finite number, got ", x);
  }
};

// The optimizer's hyper-parameters, by key name, in optim.* and in every group section under it
// (optim.<group>.*, whose unset values take optim's).
struct OptimRanges {
  std::string prefix;
  template <class T>
  void operator()(const char* key, T& m, const char*) {
    const std::string path = prefix + "." + key;
    if constexpr (Visitable<T, OptimRanges>) {
      OptimRanges sub{path};
      m.visit(sub);
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      if (m) check(key, path, *m);
    } else if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      check(key, path, (double)m);
    }
  }
  void choice(const char*, std::string&, std::initializer_list<const char*>, const char*) {}
  static void check(const std::string& key, const std::string& path, double x) {
    auto need = [&](bool ok, const char* range) {
      LINGUA_CHECK(ok, "config key '", path, "' must be ", range, ", got ", x);
    };
    if (key == "lr") need(x > 0, "> 0");
    if (key == "weight_decay") need(x >= 0, ">= 0");
    if (key == "epsilon") need(x > 0, "> 0");
    if (key == "beta1" || key == "beta2") need(x >= 0 && x < 1, "in [0, 1)");
    if (key == "lr_min_ratio") need(x >= 0 && x <= 1, "in [0, 1]");
    if (key == "warmup") need(x >= 0, ">= 0");
    if (key == "cycle_length" || key == "cosine_theta") need(x > 0, "> 0");
    if (key == "decay_fraction") need(x >= 0 && x <= 1, "in [0, 1]");
    if (key == "exp_factor") need(x >= 0, ">= 0");
  }
};

void at_least(const char* key, int64_t x, int64_t min) {
  LINGUA_CHECK(x >= min, "config key '", key, "' must be >= ", min, ", got ", x);
}

// Parallelism sizes: at least 1 here; how they fit the processes started is checked when the run
// starts (dist/layout.h), tp_size and the launcher's sizes above 1 are notes.
void parallel_size(const char* key, int x) { at_least(key, x, 1); }

void check_data(const DataConfig& d) {
  at_least("data.batch_size", d.batch_size, 1);
  at_least("data.seq_len", d.seq_len, 1);
  at_least("data.prefetch_size", d.prefetch_size, 1);
  LINGUA_CHECK(d.n_views == 2, "config key 'data.n_views': only 2 (input, target) is supported, got ", d.n_views);
  // Token positions of a micro-batch are 32-bit indices.
  const int64_t tokens = (int64_t)d.batch_size * d.seq_len;
  LINGUA_CHECK(tokens <= std::numeric_limits<int32_t>::max(), "config keys 'data.batch_size' x 'data.seq_len' (",
               d.batch_size, " x ", d.seq_len, " = ", tokens, " tokens per micro-batch) exceed the limit of ",
               std::numeric_limits<int32_t>::max(), " (32-bit token indices)");
}

void check_model(const TrainConfig& c) {
  const ModelConfig& m = c.model;
  LINGUA_CHECK(m.max_seqlen.has_value(), "config key 'model.max_seqlen' is not set (a loaded config takes data.seq_len)");
  at_least("model.max_seqlen", *m.max_seqlen, 1);
  LINGUA_CHECK(c.data.seq_len <= *m.max_seqlen, "config key 'data.seq_len' (", c.data.seq_len,
               ") exceeds 'model.max_seqlen' (", *m.max_seqlen, ")");
  LINGUA_CHECK(!m.sliding_window, "config key 'model.sliding_window' is ", m.sliding_window.value_or(0),
               ": sliding-window attention is not implemented (attention is full causal); set it to null");
  LINGUA_CHECK(m.norm_eps > 0, "config key 'model.norm_eps' must be > 0, got ", m.norm_eps);
  LINGUA_CHECK(m.rope_theta > 0, "config key 'model.rope_theta' must be > 0, got ", m.rope_theta);
  LINGUA_CHECK(!m.init_base_std || *m.init_base_std > 0, "config key 'model.init_base_std' must be > 0 or null, got ",
               m.init_base_std.value_or(0));
  LINGUA_CHECK(!m.ffn_dim_multiplier || *m.ffn_dim_multiplier > 0,
               "config key 'model.ffn_dim_multiplier' must be > 0 or null, got ", m.ffn_dim_multiplier.value_or(0));
}

void check_lingua_keys(const TrainConfig& c) {
  LINGUA_CHECK(!c.probe_freq || *c.probe_freq >= 0, "config key 'probe_freq' must be >= 0 or null, got ",
               c.probe_freq.value_or(0));
  const DistributedConfig& d = c.distributed;
  parallel_size("distributed.dp_shard", d.dp_shard);
  parallel_size("distributed.dp_replicate", d.dp_replicate);
  parallel_size("distributed.tp_size", d.tp_size);
  parallel_size("distributed.num_nodes", d.num_nodes);
  parallel_size("distributed.gpus_per_node", d.gpus_per_node);
  LINGUA_CHECK(!d.float8_recipe, "config key 'distributed.float8_recipe' is '", d.float8_recipe.value_or(""),
               "': float8 matmuls are not implemented (CUDA matmuls run in bf16); set it to null");
  LINGUA_CHECK(!d.fsdp_type || *d.fsdp_type == "no_shard" || *d.fsdp_type == "full_shard",
               "config key 'distributed.fsdp_type': '", d.fsdp_type.value_or(""), "' is not one of: no_shard, full_shard");
  LINGUA_CHECK(d.model_dtype != "fp16", "config key 'distributed.model_dtype' is fp16: fp16 compute is not supported; "
               "use bf16 (fp32 weights and moments are kept either way)");
  LINGUA_CHECK(!c.checkpoint.continue_training_from_init || !c.checkpoint.init_ckpt_path.empty(),
               "config key 'checkpoint.continue_training_from_init' is true without checkpoint.init_ckpt_path: "
               "name the checkpoint whose run continues");
  const ValidationConfig& v = c.eval.validation;
  if (v.max_steps) at_least("eval.validation.max_steps", *v.max_steps, 1);
  LINGUA_CHECK(v.use_val_from_train_src && v.root_dir.empty() && v.sources.empty(),
               "config keys 'eval.validation.use_val_from_train_src|root_dir|sources': validation runs on the "
               "*.val.jsonl files of data.sources only; other validation sources are not supported (remove them)");
}

// Keys with no effect here, by path (a section covers every key under it), and why. A note is
// printed for each one a config gives: they are unset by default (checkpoint.eval.keep, shared
// with checkpoint.dump.keep, and model_dtype: when not their default).
struct NoEffect {
  const char* path;
  const char* why;
};
constexpr const char* kLauncherNote =
    "the processes come from the launcher (mpirun, torchrun, srun, `lingua launch`), each training "
    "on its own data.batch_size x grad_acc_steps, so a step's batch is that per process";
const NoEffect kNoEffect[] = {
    {"distributed.num_nodes", kLauncherNote},
    {"distributed.gpus_per_node", kLauncherNote},
    {"distributed.tp_size", "one device holds the whole model (no tensor parallelism; the computation is the same)"},
    {"gc_collect_freq", "lingua.cpp has no garbage collector to schedule"},
    {"async_eval_gpus", "validation runs inside the training run (checkpoint.eval.every), not as a separate job"},
    {"distributed.compile", "lingua.cpp runs its own fused kernels (no torch.compile)"},
    {"distributed.compile_cache_size_limit", "lingua.cpp runs its own fused kernels (no torch.compile)"},
    {"distributed.model_dtype", "CUDA matmuls read bf16 copies of the fp32 weights; the CPU path is fp32 throughout"},
    {"distributed.matmul_allow_tf32", "matmuls run in bf16 on CUDA and in fp32 on the CPU (tf32 is never used)"},
    {"distributed.float8_filter", "float8 matmuls are not implemented"},
    {"distributed.detect_anomaly", "there is no autograd (every step's loss and gradient norm are checked: optim.on_nonfinite)"},
    {"distributed.spawn_method", "the data loader runs on a thread, not in a process"},
    {"env", "lingua.cpp sets no environment variables (CPU threads: `threads`)"},
    {"logging.acc_freq", "metrics are logged per optimizer step (logging.freq)"},
    {"logging.wandb", "metrics go to dump_dir/metrics.jsonl only (no wandb client)"},
    {"profiling.mem_warmup", "no memory snapshots are taken (peak memory is logged as memory/max_active_gib)"},
    {"profiling.mem_steps", "no memory snapshots are taken (peak memory is logged as memory/max_active_gib)"},
    {"checkpoint.eval.keep", "validation runs in the training run and saves no checkpoints of its own"},
    {"eval.generator", "the evaluation here is validation loss (sample with `lingua generate`)"},
    {"eval.name", "validation results go to dump_dir/metrics.eval.jsonl"},
    {"eval.dump_dir", "validation results go to dump_dir/metrics.eval.jsonl"},
    {"eval.metric_log_dir", "validation results go to dump_dir/metrics.eval.jsonl"},
    {"eval.ckpt_dir", "validation runs on the model being trained"},
    {"eval.global_step", "validation runs on the model being trained"},
    {"eval.wandb", "validation results go to dump_dir/metrics.eval.jsonl (no wandb client)"},
};

// The node at a dotted path (const: lookups never add keys).
YAML::Node child_at(const YAML::Node& n, const std::string& path) {
  const size_t dot = path.find('.');
  const YAML::Node child = n[path.substr(0, dot)];
  return dot == std::string::npos ? child : child_at(child, path.substr(dot + 1));
}

// Paths under `path` whose value differs from the default's.
void changed_keys(const std::string& path, const YAML::Node& value, const YAML::Node& def, std::vector<std::string>& out) {
  if (value.IsMap() && def.IsMap()) {
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string k = it->first.Scalar();
      changed_keys(path + "." + k, it->second, def[k], out);
    }
    return;
  }
  if (config_detail::flow_text(value) != config_detail::flow_text(def)) out.push_back(path);
}

}  // namespace

void check_training_memory(const TrainConfig& c) {
  // The shuffle buffer holds prefetch_size batches of seq_len + 1 token windows.
  const DataConfig& d = c.data;
  const double buffer = (double)d.batch_size * d.prefetch_size * (d.seq_len + 1.0) * sizeof(int32_t);
  const uint64_t mem = host_memory_bytes();
  LINGUA_CHECK(mem == 0 || buffer <= (double)mem, "config keys 'data.batch_size' x 'data.prefetch_size' x ",
               "('data.seq_len' + 1) (", d.batch_size, " x ", d.prefetch_size, " x ", d.seq_len + 1,
               " tokens) need a ", gib_text(buffer), " shuffle buffer, more than this machine's ", gib_text((double)mem),
               " of memory");
  // A step holds its grad_acc_steps micro-batches (inputs and targets) at once.
  const double step = (double)c.grad_acc_steps * d.batch_size * d.seq_len * 2 * sizeof(int32_t);
  LINGUA_CHECK(mem == 0 || step <= (double)mem, "config keys 'grad_acc_steps' x 'data.batch_size' x 'data.seq_len' (",
               c.grad_acc_steps, " x ", d.batch_size, " x ", d.seq_len, ") need ", gib_text(step),
               " for one step's micro-batches, more than this machine's ", gib_text((double)mem), " of memory");
}

uint64_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

std::string gib_text(double bytes) {
  char b[48];
  std::snprintf(b, sizeof b, "%.4g GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return b;
}

void validate_config(const TrainConfig& c) {
  TrainConfig copy = c;  // visit() is not const
  FiniteCheck finite;
  copy.visit(finite);
  at_least("steps", c.steps, 1);
  at_least("grad_acc_steps", c.grad_acc_steps, 1);
  at_least("threads", c.threads, 0);
  check_data(c.data);
  check_model(c);
  OptimRanges optim{"optim"};
  copy.optim.visit(optim);
  LINGUA_CHECK(c.optim.scheduler != "inv_sqrt" || c.optim.warmup >= 1,
               "config key 'optim.warmup' must be >= 1 with optim.scheduler inv_sqrt (its decay divides by the step "
               "since warmup), got ", c.optim.warmup);
  at_least("checkpoint.dump.every", c.checkpoint.dump.every, 0);
  at_least("checkpoint.eval.every", c.checkpoint.eval.every, 0);
  at_least("logging.freq", c.logging.freq, 1);
  at_least("logging.unigram_baseline_tokens", c.logging.unigram_baseline_tokens, 0);
  at_least("eval.max_tokens", c.eval.max_tokens, 0);
  at_least("profiling.profile_warmup", c.profiling.profile_warmup, 0);
  at_least("profiling.profile_steps", c.profiling.profile_steps, 1);
  at_least("bench.steps", c.bench.steps, 1);
  at_least("bench.warmup", c.bench.warmup, 0);
  check_lingua_keys(c);
}

std::vector<std::string> config_notes(const TrainConfig& c) {
  const YAML::Node value = config_detail::Writer::write(c), def = config_detail::Writer::write(TrainConfig{});
  // One line per reason: "env.A and env.B have no effect: ...".
  std::vector<std::pair<std::string, std::vector<std::string>>> by_reason;
  for (const NoEffect& r : kNoEffect) {
    std::vector<std::string> keys;
    changed_keys(r.path, child_at(value, r.path), child_at(def, r.path), keys);
    if (keys.empty()) continue;
    if (by_reason.empty() || by_reason.back().first != r.why) by_reason.push_back({r.why, {}});
    for (auto& k : keys) by_reason.back().second.push_back(k);
  }
  std::vector<std::string> out;
  for (const auto& [why, keys] : by_reason) {
    std::string line;
    for (size_t i = 0; i < keys.size(); ++i) line += (i == 0 ? "" : i + 1 == keys.size() ? " and " : ", ") + keys[i];
    out.push_back(line + (keys.size() == 1 ? " has" : " have") + " no effect: " + why);
  }
  // Lingua's lm-eval task names without a local file (nothing is downloaded).
  std::vector<std::string> missing;
  harness_tasks(c.eval.harness, c.eval.task_dir, &missing);
  if (!missing.empty()) {
    std::string names;
    for (size_t i = 0; i < missing.size(); ++i) names += (i ? ", " : "") + missing[i];
    out.push_back("eval.harness.tasks has no effect: no local task file for " + names + " (" + c.eval.task_dir +
                  "/<name>.jsonl; lm-eval datasets are not downloaded: write them in the eval.tasks format)");
  }
  return out;
}

}  // namespace lingua
