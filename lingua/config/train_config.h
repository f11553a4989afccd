#pragma once
// The configuration of every command, as plain structs. Each struct's visit() lists its fields
// once (key, member, description); that one list drives YAML parsing, dot-list overrides,
// --help and the dumped config.yaml (see config.h). Keys follow Meta Lingua's names.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lingua/config/any_value.h"
#include "lingua/config/growth_config.h"
#include "lingua/config/harness.h"

namespace lingua {

struct TokenizerConfig {
  std::string name = "bytes";  // bytes | sp | tiktoken | hf
  std::string path;            // model file for sp and tiktoken
  template <class V> void visit(V& v) {
    v.choice("name", name, {"bytes", "sp", "tiktoken", "hf"},
             "tokenizer: bytes (vocab 258), sp (SentencePiece model file), tiktoken (Llama 3 style: a base64-rank "
             "BPE file, 256 special ids after the BPE ids) or hf (a Hugging Face tokenizer.json, byte-level BPE)");
    v("path", path, "tokenizer model file (sp, tiktoken, hf)");
  }
};

struct DataConfig {
  std::string root_dir;                    // holds <source>/*.chunk.*.jsonl
  std::map<std::string, double> sources;   // source dir name -> sampling weight
  int batch_size = 2;
  int seq_len = 2048;
  int n_views = 2;                         // 2: input and target (shifted by one)
  int64_t seed = 42;
  bool add_bos = true;
  bool add_eos = true;
  bool load_async = true;
  int prefetch_size = 64;                  // shuffle buffer = prefetch_size * batch_size sequences
  TokenizerConfig tokenizer;
  template <class V> void visit(V& v) {
    v("root_dir", root_dir, "directory with one sub-directory of *.chunk.*.jsonl files per source");
    v("sources", sources, "source name -> sampling weight, e.g. {wiki: 0.8, code: 0.2}");
    v("batch_size", batch_size, "sequences per micro-batch");
    v("seq_len", seq_len, "tokens per sequence");
    v("n_views", n_views, "views per window (2: input and shifted target)");
    v("seed", seed, "data RNG seed (source choice, shuffling)");
    v("add_bos", add_bos, "prepend BOS to every document");
    v("add_eos", add_eos, "append EOS to every document");
    v("load_async", load_async, "load batches ahead of the trainer in a background thread");
    v("prefetch_size", prefetch_size, "shuffle buffer size, in batches");
    v("tokenizer", tokenizer, "tokenizer");
  }
};

// The STEM tables' AdamW group: every field unset takes the model's value (optim.*); the schedule
// (warmup, decay) is shared.
struct StemOptimConfig {
  std::optional<double> lr, weight_decay, epsilon, beta1, beta2, clip;
  bool sparse = false;
  template <class V> void visit(V& v) {
    v("lr", lr, "peak learning rate of the STEM tables (default optim.lr)");
    v("weight_decay", weight_decay, "weight decay of the STEM tables (default optim.weight_decay)");
    v("epsilon", epsilon, "AdamW epsilon of the STEM tables (default optim.epsilon)");
    v("beta1", beta1, "AdamW beta1 of the STEM tables (default optim.beta1)");
    v("beta2", beta2, "AdamW beta2 of the STEM tables (default optim.beta2)");
    v("clip", clip, "clip the STEM tables' own gradient norm to this (default optim.clip; <= 0: no clipping)");
    v("sparse", sparse,
      "row-sparse AdamW: update only the table rows of the tokens the step saw (rows not seen get no weight "
      "decay and keep their moments; false: dense AdamW over every row, as the original)");
  }
};

struct OptimConfig {
  double lr = 3e-4;
  double weight_decay = 0.1;
  double epsilon = 1e-8;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double clip = 1.0;
  std::string scheduler = "cosine";
  int64_t warmup = 2000;
  double lr_min_ratio = 0.1;
  double cycle_length = 1.0;
  double cosine_theta = 1.0;
  int64_t annealing_step = 1000;
  double decay_fraction = 0.1;
  double exp_factor = 0.5;
  std::string on_nonfinite = "stop";
  int max_consecutive_skips = 10;
  StemOptimConfig stem;
  template <class V> void visit(V& v) {
    v("lr", lr, "peak learning rate");
    v("weight_decay", weight_decay, "decoupled (AdamW) weight decay");
    v("epsilon", epsilon, "AdamW epsilon");
    v("beta1", beta1, "AdamW beta1");
    v("beta2", beta2, "AdamW beta2");
    v("clip", clip, "clip the global gradient norm to this (<= 0: no clipping)");
    v.choice("scheduler", scheduler, {"constant", "linear", "inv_sqrt", "cosine", "wsd"}, "learning-rate schedule");
    v("warmup", warmup, "linear warmup steps (from 0)");
    v("lr_min_ratio", lr_min_ratio, "final / floor learning rate as a fraction of lr");
    v("cycle_length", cycle_length, "cosine: cycle length as a fraction of the decay steps");
    v("cosine_theta", cosine_theta, "cosine: exponent on the progress");
    v("annealing_step", annealing_step, "inv_sqrt: unused by the schedule, kept for Lingua configs");
    v("decay_fraction", decay_fraction, "wsd: fraction of steps spent decaying");
    v("exp_factor", exp_factor, "inv_sqrt: exponent");
    v.choice("on_nonfinite", on_nonfinite, {"stop", "skip"},
             "a step whose loss or gradient norm is NaN or inf is never applied; then stop: end the run with an error "
             "naming the step and the first non-finite gradient; skip: go on with the next batch");
    v("max_consecutive_skips", max_consecutive_skips,
      "on_nonfinite=skip: stop after this many non-finite steps in a row");
    v("stem", stem, "STEM tables' optimizer group (model.ffn=stem)");
  }
};

// Self-guided training of the structured layers (SPEC §3; the original's
// optimization.training=self_guided_training and its kwargs).
struct SelfGuidedConfig {
  std::string mode = "none";          // none | fixedstep | fixedflop
  std::string scheduler = "cosine";   // cosine | linear: alpha from 1 to 0 over max_step steps
  bool reduce_flop = false;           // run a guide only with probability alpha
  double max_step_ratio = 0.5;        // max_step = max_step_ratio * steps when max_step is 0
  int64_t max_step = 0;               // guided optimizer steps (resolved from the ratio when 0)
  template <class V> void visit(V& v) {
    v.choice("mode", mode, {"none", "fixedstep", "fixedflop"},
             "none: off; fixedstep: each structured linear y = alpha W x + (1 - alpha) S x with a dense guide W "
             "(initialised to S) for the first max_step steps, then the guides are dropped; fixedflop: the same, "
             "and the run gets max_step extra steps at the end that read the data of its first max_step steps "
             "again (the LR schedule spans them)");
    v.choice("scheduler", scheduler, {"cosine", "linear"},
             "how alpha decays from 1 at step 0 to 0 at step max_step (once per optimizer step)");
    v("reduce_flop", reduce_flop,
      "each step, each structured linear runs its guide only with probability alpha (else its structured output "
      "alone); drawn from model.seed and the step, so runs and resumes repeat exactly");
    v("max_step_ratio", max_step_ratio, "guided steps as a fraction of steps (when max_step is 0)");
    v("max_step", max_step, "guided optimizer steps (0: max_step_ratio * steps)");
  }
};

// Structured FFN layers (model.ffn lowrank | blockdense | blockshuffle; the original's
// method.kwargs), SPEC §3.
struct StructuredFfnConfig {
  int rank = 0;                            // lowrank, blockdense: rank of each factor pair (required)
  int nblocks = 0;                         // blockdense, blockshuffle: diagonal blocks (required)
  std::string init = "fixed";              // fixed: N(0, 0.02); xavier: N(0, 1 / fan_in) per factor
  std::string post_init = "none";          // none | svd (lowrank) | ortho (blockdense, blockshuffle)
  std::optional<std::vector<int>> layers;  // the structured layers (default: every layer but 0)
  SelfGuidedConfig self_guided;
  int premerge_max_tokens = -1;            // pre-merge: dense weights for forwards of <= this many rows (-1: auto)
  template <class V> void visit(V& v) {
    v("rank", rank,
      "ffn=lowrank: rank r of both FFN linears' factors (W = B A, A [r, in], B [out, r]); ffn=blockdense: the "
      "width r of the block-diagonal factor's output (W = B blockdiag(A_1..A_k), A_c [r/k, in/k], B [out, r])");
    v("nblocks", nblocks,
      "ffn=blockdense, blockshuffle: number k of diagonal blocks (divides the widths it splits: in, out, rank)");
    v.choice("init", init, {"fixed", "xavier"}, "factor init: fixed N(0, 0.02); xavier N(0, 1/fan_in) per factor");
    v.choice("post_init", post_init, {"none", "svd", "ortho"},
             "svd (lowrank): instead, A = sqrt(S_r) V_r^T and B = U_r sqrt(S_r) of the dense layer's init W; "
             "ortho (blockdense, blockshuffle): each block (and blockdense's dense factor) replaced by U V^T of its "
             "own SVD");
    v("layers", layers, "the layers whose FFN is structured (default: every layer but 0, as the original)");
    v("self_guided", self_guided, "self-guided training: dense guides mixed into the structured linears early on");
    v("premerge_max_tokens", premerge_max_tokens,
      "pre-merge: forwards without backward (decoding, scoring) of at most this many token rows multiply by dense "
      "weights merged from the factors, kept beside them; 0: never; -1 (auto): up to 256 rows on CUDA where dim <= "
      "2048, else never (measured on H100: bench/NOTES.md)");
  }
};

struct ModelConfig {
  int dim = 512;
  int n_layers = 8;
  std::optional<int> head_dim;          // default dim / n_heads
  int n_heads = 8;
  std::optional<int> n_kv_heads;        // default n_heads
  std::optional<double> ffn_dim_multiplier;
  int multiple_of = 256;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<double> init_base_std;  // default dim^-0.5
  std::string init_std_factor = "disabled";
  std::optional<int> max_seqlen;        // default data.seq_len (TrainConfig::resolve_defaults)
  std::optional<int> sliding_window;    // Lingua's key; only null (full causal attention) is supported
  int vocab_size = -1;                  // -1: the tokenizer's vocabulary size
  bool weight_tying = false;
  int64_t seed = 42;
  std::string ffn = "swiglu";           // FFN variant (registry key)
  std::optional<std::vector<int>> stem_layers;  // ffn=stem: the STEM layers (default: all but layer 0)
  StructuredFfnConfig structured;       // ffn=lowrank | blockdense | blockshuffle
  // Module tokens (SPEC §4; lingua/model/module_tokens.h).
  int module_seq_len = 0;                // rows per module
  std::string module_agg = "avg";        // stack | sum | avg | mean | drop
  std::vector<std::string> modules;      // the modules the model holds (parameters), by name
  std::optional<std::vector<std::string>> enabled_modules;  // those that run (null: all)
  std::string create_module_name;        // train this module alone on the frozen rest
  bool recompute_norms = false;         // activation recomputation (memory for speed)
  bool grads_in_activations = true;     // gradients over dead activations (one micro-batch a step)
  template <class V> void visit(V& v) {
    v("dim", dim, "model width");
    v("n_layers", n_layers, "transformer blocks");
    v("head_dim", head_dim, "attention head size (default dim / n_heads)");
    v("n_heads", n_heads, "query heads");
    v("n_kv_heads", n_kv_heads, "key/value heads for GQA (default n_heads)");
    v("ffn_dim_multiplier", ffn_dim_multiplier, "scales the FFN hidden size int(8*dim/3)");
    v("multiple_of", multiple_of, "FFN hidden size is rounded up to a multiple of this");
    v("norm_eps", norm_eps, "RMSNorm epsilon");
    v("rope_theta", rope_theta, "RoPE base");
    v("init_base_std", init_base_std, "std of q,k,v,w1,w3 init (default dim^-0.5)");
    v.choice("init_std_factor", init_std_factor, {"disabled", "global_depth", "current_depth", "dim_ratio"},
             "divides the std of output projections (wo, w2)");
    v("max_seqlen", max_seqlen, "longest sequence: RoPE table size, generation context (default data.seq_len)");
    v("sliding_window", sliding_window, "local attention window (Lingua's key; only null: full causal attention)");
    v("vocab_size", vocab_size, "vocabulary size (-1: from the tokenizer)");
    v("weight_tying", weight_tying, "output head shares the token embedding");
    v("seed", seed, "parameter init seed");
    v("ffn", ffn, "FFN variant (swiglu; stem: STEM layers per stem_layers, swiglu elsewhere; lowrank, blockdense, "
      "blockshuffle: structured linears per structured.*, swiglu elsewhere)");
    v("stem_layers", stem_layers,
      "ffn=stem: the layers whose FFN up-projection is a token-indexed table (default: every layer but 0)");
    v("structured", structured, "structured FFN layers (ffn=lowrank, blockdense, blockshuffle)");
    v("module_seq_len", module_seq_len,
      "module tokens: rows (vectors of size dim) each module adds to every sequence, in every layer (README: Module "
      "tokens)");
    v.choice("module_agg", module_agg, {"stack", "sum", "avg", "mean", "drop"},
             "module tokens: how a layer's parameter block P_l combines with the module rows m coming from the layer "
             "below (layer 0 takes P_0): stack m (only layer 0 has parameters), sum m + P_l, avg (m + P_l) / 2, mean "
             "(l m + P_l) / (l + 1), drop P_l");
    v("modules", modules, "module tokens: the modules the model holds, by name (checkpoint tensors "
      "layers.<l>.modules.<name>); `lingua modules` adds, removes and renames them");
    v("enabled_modules", enabled_modules,
      "module tokens: the modules that run, in any order (they run in sorted name order; null: all of model.modules; "
      "[]: none, the base model)");
    v("create_module_name", create_module_name,
      "module tokens: train this module (added to model.modules, initialised, enabled) and freeze every other "
      "parameter; start from the base with checkpoint.init_ckpt_path");
    v("recompute_norms", recompute_norms,
      "recompute the RMSNorm outputs in backward instead of keeping them (saves 2 x tokens x dim activations "
      "per layer for two extra norm passes)");
    v("grads_in_activations", grads_in_activations,
      "with one micro-batch per step (grad_acc_steps 1), keep each layer's gradients in the memory of activations "
      "that are dead when it is written, instead of a buffer of their own (saves most of the gradients' size at "
      "peak, no speed cost)");
  }
};

struct DumpPolicy {
  int64_t every = 1000;
  int keep = 0;  // 0 or less: keep all
  template <class V> void visit(V& v) {
    v("every", every, "steps between saves (0: never)");
    v("keep", keep, "how many of the newest to keep (<= 0: all)");
  }
};

// checkpoint.eval: the keys of DumpPolicy (Lingua's layout), its own meaning.
struct EvalPolicy {
  int64_t every = 0;
  int keep = 0;
  template <class V> void visit(V& v) {
    v("every", every,
      "run validation on data.root_dir/<source>/*.val.jsonl every N steps, into dump_dir/metrics.eval.jsonl "
      "(0: never)");
    v("keep", keep, "unused (Lingua's key)");
  }
};

struct CheckpointConfig {
  DumpPolicy dump;
  EvalPolicy eval;
  std::string path;            // default dump_dir/checkpoints
  std::string init_ckpt_path;  // start from these weights (a checkpoint step directory)
  bool continue_training_from_init = false;
  std::optional<bool> init_data_state;  // null: when init_ckpt_path is a grown checkpoint
  template <class V> void visit(V& v) {
    v("dump", dump, "training checkpoints");
    v("eval", eval, "validation during training");
    v("path", path, "checkpoint directory (default dump_dir/checkpoints)");
    v("init_ckpt_path", init_ckpt_path,
      "initialise the model weights from this checkpoint: a step directory, a weights file, or a dump_dir (its "
      "newest checkpoint)");
    v("continue_training_from_init", continue_training_from_init,
      "with init_ckpt_path: continue that run (its optimizer state and step), not only its weights");
    v("init_data_state", init_data_state,
      "with init_ckpt_path: the data loader continues where that checkpoint's run stopped (the tokens its model saw "
      "are not read again), with a fresh optimizer and schedule; null: when it is a grown checkpoint (lingua grow), "
      "as PRTS does");
  }
};

struct LoggingConfig {
  int64_t freq = 10;
  std::optional<int64_t> acc_freq;  // Lingua's key: no effect here
  AnyValue wandb;                   // Lingua's key: no effect here
  int64_t unigram_baseline_tokens = 0;
  template <class V> void visit(V& v) {
    v("freq", freq, "steps between metrics lines");
    v("acc_freq", acc_freq, "Lingua: log every N accumulation steps (no effect: metrics are per optimizer step)");
    v("wandb", wandb, "Lingua: Weights & Biases settings (no effect: metrics go to dump_dir/metrics.jsonl)");
    v("unigram_baseline_tokens", unigram_baseline_tokens,
      "print the unigram entropy of this many training tokens at start (0: off)");
  }
};

// Lingua's eval.validation; max_steps is honoured (see TrainConfig::resolve_defaults), the
// other sources are not supported.
struct ValidationConfig {
  std::optional<int64_t> max_steps;
  bool use_val_from_train_src = true;
  std::string root_dir;
  std::vector<std::string> sources;
  template <class V> void visit(V& v) {
    v("max_steps", max_steps,
      "batches (data.batch_size x data.seq_len tokens) per source per evaluation; caps eval.max_tokens (null: all)");
    v("use_val_from_train_src", use_val_from_train_src, "validate on the training sources (only true is supported)");
    v("root_dir", root_dir, "other validation sources' root (not supported: must be empty)");
    v("sources", sources, "other validation sources (not supported: must be empty)");
  }
};

// In-training evaluation. Lingua's eval section also holds its generator, harness and job keys:
// accepted, with a note that they have no effect (validation loss is the evaluation here).
// One downstream task (eval.tasks; lingua/eval/tasks.h): a local JSONL file of examples.
struct TaskConfig {
  std::string name;                          // metrics prefix (default: the file's name without .jsonl)
  std::string path;                          // the JSONL file
  std::string type = "multiple_choice";      // multiple_choice | loglikelihood_rolling | generate_until
  int num_fewshot = 0;
  int64_t fewshot_seed = 1234;
  int64_t limit = 0;                         // examples scored (0: all)
  std::string target_delimiter = " ";
  std::string fewshot_delimiter = "\n\n";
  std::vector<std::string> until = {"\n\n"};  // generate_until: stop strings
  int max_gen_toks = 256;                    // generate_until: new tokens at most
  std::string answer_regex;                  // generate_until: compare its first capture group
  template <class V> void visit(V& v) {
    v("name", name, "name of the task's metrics (default: the file's name without .jsonl)");
    v("path", path, "JSONL file of examples (README \"Task evaluation\" gives the fields of each type)");
    v.choice("type", type, {"multiple_choice", "loglikelihood_rolling", "generate_until"},
             "lm-eval request type: multiple_choice (acc, acc_norm), loglikelihood_rolling (perplexity, bits per "
             "byte), generate_until (greedy generation, exact_match)");
    v("num_fewshot", num_fewshot, "examples of the same file put before each context");
    v("fewshot_seed", fewshot_seed, "seed of the few-shot draws");
    v("limit", limit, "examples scored, from the top of the file (0: all)");
    v("target_delimiter", target_delimiter, "between a context and its choice or answer");
    v("fewshot_delimiter", fewshot_delimiter, "between few-shot examples, and before the context");
    v("until", until, "generate_until: stop strings");
    v("max_gen_toks", max_gen_toks, "generate_until: new tokens at most");
    v("answer_regex", answer_regex,
      "generate_until: compare the first capture group of this regex (ECMAScript) in the output, not the whole "
      "output");
  }
};

struct EvalConfig {
  int64_t max_tokens = 0;  // 0: all validation data
  ValidationConfig validation;
  std::vector<TaskConfig> tasks;
  std::string task_dir = "data/tasks";  // eval.harness task names -> <task_dir>/<name>.jsonl
  AnyValue generator, harness, name, dump_dir, metric_log_dir, ckpt_dir, global_step, wandb;
  template <class V> void visit(V& v) {
    v("max_tokens", max_tokens, "validation tokens per source per evaluation (0: all)");
    v("validation", validation, "validation loss on the sources' *.val.jsonl files");
    v("tasks", tasks, "downstream tasks scored at every evaluation and by lingua eval (a list of {name, path, type, ...})");
    v("generator", generator, "Lingua: generation settings of its evaluation (no effect)");
    v("task_dir", task_dir, "directory of the task files eval.harness.tasks names (<task_dir>/<name>.jsonl)");
    v("harness", harness,
      "Lingua's lm-eval-harness section: its tasks (names or {task, num_fewshot, limit}) are scored from local "
      "files <eval.task_dir>/<name>.jsonl, as eval.tasks (nothing is downloaded); other keys have no effect");
    v("name", name, "Lingua: evaluation job name (no effect)");
    v("dump_dir", dump_dir, "Lingua: evaluation output directory (no effect)");
    v("metric_log_dir", metric_log_dir, "Lingua: evaluation metrics directory (no effect)");
    v("ckpt_dir", ckpt_dir, "Lingua: checkpoint to evaluate (no effect)");
    v("global_step", global_step, "Lingua: step of the evaluated checkpoint (no effect)");
    v("wandb", wandb, "Lingua: Weights & Biases settings of its evaluation (no effect)");
  }
};

// Lingua's distributed section: the parallelism over the processes a launcher started
// (lingua/dist/layout.h); float8 is refused; keys about torch.compile, tf32 and the like are unset by
// default and, when a config gives them, accepted with a note that they have no effect (validate.h).
struct DistributedConfig {
  int dp_shard = 1, dp_replicate = 1, tp_size = 1, num_nodes = 1, gpus_per_node = 1, stem_parallel_size = 1;
  std::string model_dtype = "bf16";
  std::string reduce_dtype = "fp32";
  std::optional<std::string> float8_recipe;
  bool allow_bf16_reduced_precision_reduction = true;
  std::optional<bool> selective_activation_checkpointing, compile, matmul_allow_tf32, detect_anomaly;
  std::optional<std::string> fsdp_type, float8_filter, spawn_method;
  std::optional<int> compile_cache_size_limit;
  template <class V> void visit(V& v) {
    v("dp_shard", dp_shard,
      "Lingua: processes each parameter is sharded over, with fsdp_type full_shard (1: none; the number of "
      "processes: FSDP; a divisor of it: HSDP, processes / dp_shard replicas of consecutive ranks)");
    v("dp_replicate", dp_replicate,
      "Lingua: data-parallel replicas (follows the number of processes: processes / dp_shard)");
    v("stem_parallel_size", stem_parallel_size,
      "Lingua STEM: processes each STEM table is split over by columns (groups of consecutive ranks; 1: whole "
      "tables on every process)");
    v("tp_size", tp_size, "Lingua: tensor-parallel size (no tensor parallelism here: a note above 1)");
    v("num_nodes", num_nodes, "Lingua launcher: nodes (no effect: the launcher starts the processes)");
    v("gpus_per_node", gpus_per_node, "Lingua launcher: GPUs per node (no effect: one process per GPU)");
    v.choice("model_dtype", model_dtype, {"bf16", "fp32", "fp16"},
             "Lingua: compute dtype (bf16: CUDA matmuls in bf16; fp32 has no effect; fp16 is refused)");
    v.choice("reduce_dtype", reduce_dtype, {"fp32", "bf16"},
             "DDP gradient all-reduce: fp32, or bf16 (half the bytes on the wire, rounded once per rank before and "
             "once after; FSDP reduce-scatters in fp32)");
    v("float8_recipe", float8_recipe, "Lingua: float8 matmuls (only null)");
    v("allow_bf16_reduced_precision_reduction", allow_bf16_reduced_precision_reduction,
      "Lingua: bf16 reductions in matmuls (accepted: matmuls accumulate in fp32 either way)");
    v("selective_activation_checkpointing", selective_activation_checkpointing,
      "Lingua: keep matmul and attention outputs, recompute the rest (true sets model.recompute_norms: the norm "
      "outputs are what else is kept)");
    v("compile", compile, "Lingua: torch.compile (no effect: lingua.cpp runs its own fused kernels)");
    v("matmul_allow_tf32", matmul_allow_tf32, "Lingua: tf32 matmuls (no effect: matmuls are bf16 on CUDA, fp32 on CPU)");
    v("detect_anomaly", detect_anomaly, "Lingua: autograd anomaly detection (no effect: no autograd)");
    v("fsdp_type", fsdp_type, "Lingua: no_shard (DDP: every process holds the whole model) or full_shard (FSDP over dp_shard "
      "processes)");
    v("float8_filter", float8_filter, "Lingua: layers that use float8 (no effect)");
    v("spawn_method", spawn_method, "Lingua: process start method (no effect: the data loader is a thread)");
    v("compile_cache_size_limit", compile_cache_size_limit, "Lingua: torch.compile cache (no effect)");
  }
};

// Lingua's env section: environment variables its launcher sets (no effect: lingua.cpp sets none;
// CPU threads come from `threads`).
struct EnvConfig {
  std::optional<std::string> MKL_SERVICE_FORCE_INTEL, OMP_NUM_THREADS, MKL_NUM_THREADS, ENABLE_INTRA_NODE_COMM,
      TORCH_NCCL_AVOID_RECORD_STREAMS, NCCL_IB_TIMEOUT, NCCL_DEBUG, TORCH_NCCL_ASYNC_ERROR_HANDLING;
  template <class V> void visit(V& v) {
    v("MKL_SERVICE_FORCE_INTEL", MKL_SERVICE_FORCE_INTEL, "no effect");
    v("OMP_NUM_THREADS", OMP_NUM_THREADS, "no effect (use threads)");
    v("MKL_NUM_THREADS", MKL_NUM_THREADS, "no effect (use threads)");
    v("ENABLE_INTRA_NODE_COMM", ENABLE_INTRA_NODE_COMM, "no effect");
    v("TORCH_NCCL_AVOID_RECORD_STREAMS", TORCH_NCCL_AVOID_RECORD_STREAMS, "no effect");
    v("NCCL_IB_TIMEOUT", NCCL_IB_TIMEOUT, "no effect");
    v("NCCL_DEBUG", NCCL_DEBUG, "no effect");
    v("TORCH_NCCL_ASYNC_ERROR_HANDLING", TORCH_NCCL_ASYNC_ERROR_HANDLING, "no effect");
  }
};

struct BenchConfig {
  int64_t steps = 20;   // timed optimizer steps
  int64_t warmup = 5;   // untimed steps first
  std::string out;      // append a JSON line here (e.g. bench/results/cuda.jsonl)
  std::string config_name;  // name recorded in the results ("A", "B", ...)
  std::string tokens = "rank";  // rank | global: how the random batches are drawn
  template <class V> void visit(V& v) {
    v("steps", steps, "lingua bench: timed steps");
    v.choice("tokens", tokens, {"rank", "global"},
             "lingua bench: rank: each process draws its own batch (as the anchor); global: rows of one global "
             "batch, so N processes x batch_size B see what one process with batch_size N x B sees, and the loss "
             "is the mean over the processes (loss curves of several layouts compare; the result lists every "
             "step's loss)");
    v("warmup", warmup, "lingua bench: untimed steps before timing");
    v("out", out, "lingua bench: append the result as a JSON line to this file");
    v("config_name", config_name, "lingua bench: config name recorded in the result");
  }
};

struct ProfilingConfig {
  bool run = false;
  std::string trace_folder = "profiling";  // under dump_dir
  int64_t profile_warmup = 100;  // steps before the profiled ones
  int64_t profile_steps = 4;
  std::optional<int64_t> mem_warmup, mem_steps;  // Lingua's memory snapshots: no effect here
  template <class V> void visit(V& v) {
    v("run", run, "record per-op timings of a few steps (Chrome trace + summary under dump_dir/trace_folder)");
    v("trace_folder", trace_folder, "folder under dump_dir for the traces");
    v("profile_warmup", profile_warmup, "steps before profiling starts (lingua bench: after the timed steps)");
    v("profile_steps", profile_steps, "steps profiled");
    v("mem_warmup", mem_warmup, "Lingua: steps before memory snapshots (no effect: see memory/max_active_gib)");
    v("mem_steps", mem_steps, "Lingua: steps with memory snapshots (no effect)");
  }
};

struct TrainConfig {
  std::string name = "lingua";
  std::string dump_dir;
  int64_t seed = 42;
  int grad_acc_steps = 1;
  int64_t steps = 1000;
  std::optional<int64_t> probe_freq;         // steps between probes (lingua/train/probe.h); null or 0: none
  std::optional<int64_t> gc_collect_freq;    // Lingua's Python GC schedule: no effect
  std::optional<int> async_eval_gpus;        // Lingua's separate evaluation job: no effect
  std::string device = "auto";
  bool cuda_graph = true;
  int threads = 0;  // 0: all cores
  DataConfig data;
  OptimConfig optim;
  ModelConfig model;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  EvalConfig eval;
  BenchConfig bench;
  ProfilingConfig profiling;
  DistributedConfig distributed;
  GrowthConfig growth;
  EnvConfig env;
  template <class V> void visit(V& v) {
    v("name", name, "run name");
    v("dump_dir", dump_dir, "output directory: config.yaml, metrics.jsonl, checkpoints/");
    v("seed", seed, "global seed");
    v("grad_acc_steps", grad_acc_steps, "micro-batches per optimizer step");
    v("steps", steps, "optimizer steps");
    v("probe_freq", probe_freq,
      "steps between probes: statistics of every linear layer's input, output, gradients and weights, and attention "
      "entropy, to dump_dir/probe/probe.<rank>.jsonl (null or 0: none)");
    v("gc_collect_freq", gc_collect_freq, "Lingua: steps between Python garbage collections (no effect)");
    v("async_eval_gpus", async_eval_gpus, "Lingua: GPUs of a separate evaluation job (no effect: evaluation runs here)");
    v.choice("device", device, {"auto", "cpu", "cuda"}, "compute device (auto: cuda when a GPU is present)");
    v("cuda_graph", cuda_graph,
      "on CUDA, capture the training step as one CUDA graph after its first run and replay it (false: launch each "
      "kernel from the host, for debugging)");
    v("threads", threads, "CPU threads (0: all cores)");
    v("data", data, "data loading");
    v("optim", optim, "optimizer and schedule");
    v("model", model, "model architecture");
    v("checkpoint", checkpoint, "checkpointing");
    v("logging", logging, "logging");
    v("eval", eval, "validation");
    v("bench", bench, "benchmark settings (lingua bench)");
    v("profiling", profiling, "per-op profiling");
    v("distributed", distributed, "Lingua: parallelism and compilation (one device here)");
    v("growth", growth, "model growth inside the run (PRTS): train a smaller model first, grow it, go on");
    v("env", env, "Lingua: environment variables of its launcher (no effect)");
  }
  // Defaults that follow other keys, filled once the config is read (file, overrides or
  // params.json): model.max_seqlen follows data.seq_len, as Lingua; eval.validation.max_steps
  // caps eval.max_tokens at max_steps batches; eval.harness.tasks join eval.tasks (harness.h);
  // distributed.selective_activation_checkpointing turns model.recompute_norms on.
  void resolve_defaults() {
    if (!model.max_seqlen) model.max_seqlen = data.seq_len;
    // The module being created is one of the model's, and runs.
    if (const std::string& x = model.create_module_name; !x.empty()) {
      if (std::find(model.modules.begin(), model.modules.end(), x) == model.modules.end()) model.modules.push_back(x);
      auto& en = model.enabled_modules;
      if (en && std::find(en->begin(), en->end(), x) == en->end()) en->push_back(x);
    }
    SelfGuidedConfig& sg = model.structured.self_guided;
    if (sg.mode != "none" && sg.max_step == 0) sg.max_step = (int64_t)((double)steps * sg.max_step_ratio);
    // Lingua's selective checkpointing keeps matmul and attention outputs and recomputes the rest:
    // here the norms (the gate product and table lookups are always recomputed).
    if (distributed.selective_activation_checkpointing.value_or(false)) model.recompute_norms = true;
    for (TaskConfig& t : harness_tasks(eval.harness, eval.task_dir)) {  // (once: params.json holds them)
      bool present = false;
      for (const TaskConfig& e : eval.tasks) present = present || e.name == t.name;
      if (!present) eval.tasks.push_back(std::move(t));
    }
    if (eval.validation.max_steps && *eval.validation.max_steps > 0 && data.batch_size > 0 && data.seq_len > 0) {
      const int64_t per_step = (int64_t)data.batch_size * data.seq_len, steps = *eval.validation.max_steps;
      const int64_t cap = steps > INT64_MAX / per_step ? INT64_MAX : steps * per_step;
      eval.max_tokens = eval.max_tokens > 0 && eval.max_tokens < cap ? eval.max_tokens : cap;
    }
  }
};

}  // namespace lingua
