#pragma once
// The configuration of every command, as plain structs. Each struct's visit() lists its fields
// once (key, member, description); that one list drives YAML parsing, dot-list overrides,
// --help and the dumped config.yaml (see config.h). Keys follow Meta Lingua's names.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lingua {

struct TokenizerConfig {
  std::string name = "bytes";  // bytes | sp
  std::string path;            // model file for sp
  template <class V> void visit(V& v) {
    v.choice("name", name, {"bytes", "sp"}, "tokenizer: bytes (vocab 258) or sp (SentencePiece model file)");
    v("path", path, "tokenizer model file (sp)");
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
  int max_seqlen = 1024;
  int vocab_size = -1;                  // -1: the tokenizer's vocabulary size
  bool weight_tying = false;
  int64_t seed = 42;
  std::string ffn = "swiglu";           // FFN variant (registry key)
  std::optional<std::vector<int>> stem_layers;  // ffn=stem: the STEM layers (default: all but layer 0)
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
    v("max_seqlen", max_seqlen, "longest sequence (RoPE table size)");
    v("vocab_size", vocab_size, "vocabulary size (-1: from the tokenizer)");
    v("weight_tying", weight_tying, "output head shares the token embedding");
    v("seed", seed, "parameter init seed");
    v("ffn", ffn, "FFN variant (swiglu; stem: STEM layers per stem_layers, swiglu elsewhere)");
    v("stem_layers", stem_layers,
      "ffn=stem: the layers whose FFN up-projection is a token-indexed table (default: every layer but 0)");
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
  template <class V> void visit(V& v) {
    v("dump", dump, "training checkpoints");
    v("eval", eval, "validation during training");
    v("path", path, "checkpoint directory (default dump_dir/checkpoints)");
    v("init_ckpt_path", init_ckpt_path, "initialise the model weights from this checkpoint directory");
  }
};

struct LoggingConfig {
  int64_t freq = 10;
  int64_t unigram_baseline_tokens = 0;
  template <class V> void visit(V& v) {
    v("freq", freq, "steps between metrics lines");
    v("unigram_baseline_tokens", unigram_baseline_tokens,
      "print the unigram entropy of this many training tokens at start (0: off)");
  }
};

struct EvalConfig {
  int64_t max_tokens = 0;  // 0: all validation data
  template <class V> void visit(V& v) {
    v("max_tokens", max_tokens, "validation tokens per source per evaluation (0: all)");
  }
};

struct BenchConfig {
  int64_t steps = 20;   // timed optimizer steps
  int64_t warmup = 5;   // untimed steps first
  std::string out;      // append a JSON line here (e.g. bench/results/cuda.jsonl)
  std::string config_name;  // name recorded in the results ("A", "B", ...)
  template <class V> void visit(V& v) {
    v("steps", steps, "lingua bench: timed steps");
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
  template <class V> void visit(V& v) {
    v("run", run, "record per-op timings of a few steps (Chrome trace + summary under dump_dir/trace_folder)");
    v("trace_folder", trace_folder, "folder under dump_dir for the traces");
    v("profile_warmup", profile_warmup, "steps before profiling starts (lingua bench: after the timed steps)");
    v("profile_steps", profile_steps, "steps profiled");
  }
};

struct TrainConfig {
  std::string name = "lingua";
  std::string dump_dir;
  int64_t seed = 42;
  int grad_acc_steps = 1;
  int64_t steps = 1000;
  int64_t probe_freq = 0;
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
  template <class V> void visit(V& v) {
    v("name", name, "run name");
    v("dump_dir", dump_dir, "output directory: config.yaml, metrics.jsonl, checkpoints/");
    v("seed", seed, "global seed");
    v("grad_acc_steps", grad_acc_steps, "micro-batches per optimizer step");
    v("steps", steps, "optimizer steps");
    v("probe_freq", probe_freq, "steps between activation probes (0: off; not implemented yet, must be 0)");
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
  }
};

}  // namespace lingua
