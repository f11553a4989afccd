// Meta Lingua configs (configs/lingua_debug.yaml: every key of Lingua's TrainArgs), and the
// command-line behaviour of config errors, limits, params.json checks and generation notes.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <regex>
#include <set>

#include "lingua/config/config.h"
#include "lingua/config/validate.h"
#include "lingua/checkpoint/checkpoint.h"
#include "lingua/core/cuda.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

const std::string kLinguaConfig = std::string(LINGUA_SOURCE_DIR) + "/configs/lingua_debug.yaml";

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Leaf paths of a YAML mapping ("optim.lr", "eval.harness.tasks", ...) with their nodes.
void leaves(const YAML::Node& n, const std::string& prefix, std::vector<std::pair<std::string, YAML::Node>>& out) {
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string path = prefix.empty() ? it->first.Scalar() : prefix + "." + it->first.Scalar();
    if (it->second.IsMap()) leaves(it->second, path, out);
    else out.push_back({path, it->second});
  }
}

// The node at a dotted path of a const mapping.
YAML::Node at(const YAML::Node& n, const std::string& path) {
  const size_t dot = path.find('.');
  const YAML::Node c = n[path.substr(0, dot)];
  return dot == std::string::npos ? c : at(c, path.substr(dot + 1));
}

// Same value: numbers compared as numbers (3.0e-3 == 0.003), null as null (or the empty text a
// string key reads it as), the rest as text.
bool same_value(const YAML::Node& a, const YAML::Node& b) {
  double x, y;
  if (a.IsScalar() && b.IsScalar() && YAML::convert<double>::decode(a, x) && YAML::convert<double>::decode(b, y))
    return x == y;
  auto null_or_empty = [](const YAML::Node& n) { return n.IsNull() || (n.IsScalar() && n.Scalar().empty()); };
  if (a.IsNull() || b.IsNull()) return null_or_empty(a) && null_or_empty(b);
  YAML::Emitter ea, eb;
  ea << YAML::Flow << a;
  eb << YAML::Flow << b;
  return std::string(ea.c_str()) == eb.c_str();
}

// `lingua <args>` under a time limit (a hang fails the test instead of stalling the suite).
std::pair<int, std::string> run_cli_limited(const std::string& args, int seconds = 120, const std::string& shell_prefix = "") {
  const std::string cmd =
      shell_prefix + "timeout " + std::to_string(seconds) + " " + LINGUA_BINARY + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  return {WEXITSTATUS(rc), out};
}

// A two-step byte-level run (context 24) on the test corpus through the CLI; returns its dump_dir.
fs::path tiny_cli_run(const std::string& name) {
  const fs::path data = make_corpus(name), dump = temp_dir(name + "_dump");
  auto [rc, out] = run_cli("train config=" + std::string(LINGUA_SOURCE_DIR) + "/configs/demo.yaml dump_dir=" +
                           dump.string() + " data.root_dir=" + data.string() +
                           " 'data.sources={toy: 1.0}' model.dim=32 model.n_layers=2 model.n_heads=4 "
                           "model.multiple_of=16 data.seq_len=24 model.max_seqlen=24 steps=2 checkpoint.eval.every=0 "
                           "logging.unigram_baseline_tokens=0 device=cpu");
  EXPECT_EQ(rc, 0) << out;
  return dump;
}

std::string newest_params_json(const fs::path& dump) {
  const auto ckpts = list_checkpoints((dump / "checkpoints").string());
  return ckpts.empty() ? std::string("(no checkpoint)") : ckpts.back().path + "/params.json";
}

}  // namespace

TEST(LinguaConfig, EveryKeyIsHonouredOrPrintsANote) {
  const YAML::Node file = YAML::LoadFile(kLinguaConfig);
  std::vector<std::pair<std::string, YAML::Node>> keys;
  leaves(file, "", keys);
  // Keys this file sets that lingua.cpp honours (their values are the run's).
  const std::set<std::string> honoured = {
      "dump_dir", "name", "steps", "seed", "grad_acc_steps", "async_eval_gpus", "probe_freq",
      "optim.lr", "optim.weight_decay", "optim.epsilon", "optim.beta1", "optim.beta2", "optim.clip",
      "optim.scheduler", "optim.warmup", "optim.lr_min_ratio", "optim.cycle_length", "optim.cosine_theta",
      "optim.annealing_step", "optim.decay_fraction", "optim.exp_factor",
      // the data-parallel layout, bf16 matmuls on CUDA, no float8, fp32 accumulation in matmuls
      "distributed.dp_shard", "distributed.dp_replicate", "distributed.fsdp_type", "distributed.num_nodes", "distributed.model_dtype", "distributed.float8_recipe",
      "distributed.allow_bf16_reduced_precision_reduction",
      "distributed.selective_activation_checkpointing",  // (sets model.recompute_norms)
      "model.dim", "model.n_layers", "model.head_dim", "model.n_heads", "model.n_kv_heads", "model.ffn_dim_multiplier",
      "model.multiple_of", "model.norm_eps", "model.rope_theta", "model.init_base_std", "model.init_std_factor",
      "model.seed", "model.vocab_size", "model.weight_tying", "model.sliding_window",
      "data.root_dir", "data.sources.toy", "data.batch_size", "data.seq_len", "data.n_views", "data.seed",
      "data.add_bos", "data.add_eos", "data.load_async", "data.prefetch_size", "data.tokenizer.name",
      "data.tokenizer.path", "profiling.run", "profiling.trace_folder", "profiling.profile_warmup",
      "profiling.profile_steps", "checkpoint.dump.every", "checkpoint.dump.keep", "checkpoint.eval.every",
      "checkpoint.path", "checkpoint.init_ckpt_path", "checkpoint.continue_training_from_init", "logging.freq",
      "eval.validation.max_steps"};
  const TrainConfig cfg =
      parse_config<TrainConfig>({"config=" + kLinguaConfig, "dump_dir=/tmp/x", "data.root_dir=/tmp/data",
                                 "data.tokenizer.path=/tmp/tokenizer"});
  validate_config(cfg);
  const std::vector<std::string> notes = config_notes(cfg);
  // "a has no effect: why", "a, b and c have no effect: why": the keys each note names.
  std::set<std::string> noted_keys;
  for (const std::string& n : notes) {
    const size_t end = n.find(n.find(" have no effect: ") != std::string::npos ? " have no effect: " : " has no effect: ");
    ASSERT_NE(end, std::string::npos) << n;
    const std::regex sep(", | and ");
    const std::string list = n.substr(0, end);
    for (std::sregex_token_iterator it(list.begin(), list.end(), sep, -1), e; it != e; ++it) noted_keys.insert(*it);
  }
  EXPECT_EQ(std::count_if(notes.begin(), notes.end(), [](const std::string& n) { return has(n, "env."); }), 1)
      << "one line for the env variables, which share their reason";
  const YAML::Node parsed = config_detail::Writer::write(cfg);
  std::set<std::string> noted;
  for (const auto& [path, value] : keys) {
    // A note names the key or the section it is in (eval.harness for eval.harness.tasks).
    bool has_note = false;
    for (const std::string& k : noted_keys)
      for (std::string p = path; !p.empty(); p = p.find('.') == std::string::npos ? "" : p.substr(0, p.rfind('.')))
        has_note |= k == p;
    if (has_note) {
      noted.insert(path);
      EXPECT_FALSE(honoured.count(path)) << path << " is honoured but has a note";
      continue;
    }
    ASSERT_TRUE(honoured.count(path)) << path << ": neither honoured nor given a note";
    if (path == "dump_dir" || path == "data.root_dir" || path == "data.tokenizer.path") continue;  // overridden
    EXPECT_TRUE(same_value(at(parsed, path), value)) << path << ": the run's value differs from the file's";
  }
  // Each no-effect key the file gives gets its line, whatever its value.
  for (const char* k : {"gc_collect_freq", "distributed.compile", "distributed.matmul_allow_tf32",
                        "distributed.compile_cache_size_limit",
                        "distributed.detect_anomaly", "distributed.float8_filter", "distributed.spawn_method",
                        "env.OMP_NUM_THREADS", "env.MKL_SERVICE_FORCE_INTEL", "env.NCCL_DEBUG", "profiling.mem_warmup",
                        "profiling.mem_steps", "checkpoint.eval.keep", "logging.acc_freq", "logging.wandb.project",
                        "eval.generator.max_tokens", "eval.harness.tasks"})
    EXPECT_TRUE(noted.count(k)) << k;
  // Values that follow others: max_seqlen from data.seq_len, the validation cap from max_steps.
  EXPECT_EQ(cfg.model.max_seqlen.value(), 24);
  EXPECT_EQ(cfg.eval.max_tokens, 2 * 2 * 24);
  EXPECT_TRUE(cfg.model.recompute_norms) << "the file's selective_activation_checkpointing: true";
}

TEST(LinguaConfig, TrainsWithOnlyItsPathsChanged) {
  const fs::path data = make_corpus("lingua_cfg"), dump = temp_dir("lingua_cfg_dump");
  auto [rc, out] = run_cli_limited("train config=" + kLinguaConfig + " dump_dir=" + dump.string() +
                                   " data.root_dir=" + data.string() + " data.tokenizer.path=/nonexistent/tokenizer");
  ASSERT_EQ(rc, 0) << out;
  // The notes, once, before training.
  EXPECT_TRUE(has(out, "note: distributed.compile and distributed.compile_cache_size_limit have no effect: lingua.cpp "
                       "runs its own fused kernels (no torch.compile)\n"))
      << out;
  EXPECT_TRUE(has(out, "note: eval.harness.tasks has no effect: no local task file for hellaswag, piqa, nq_open"))
      << out;
  EXPECT_TRUE(has(out, "note: env.MKL_SERVICE_FORCE_INTEL, env.OMP_NUM_THREADS, ")) << out;
  EXPECT_LT(out.find("note: distributed.compile"), out.find("step 1/6"));
  // steps, logging.freq, checkpoint.dump.every|keep, checkpoint.eval.every are the file's.
  EXPECT_EQ(read_jsonl(dump / "metrics.jsonl").size(), 6u);
  const auto ckpts = list_checkpoints((dump / "checkpoints").string());
  ASSERT_EQ(ckpts.size(), 1u);  // keep: 1
  EXPECT_EQ(fs::path(ckpts[0].path).filename(), "0000000006");
  // params.json records the resolved model.max_seqlen.
  const auto params = nlohmann::json::parse(std::ifstream(ckpts[0].path + "/params.json"));
  EXPECT_EQ(params["model"]["max_seqlen"], 24);
  EXPECT_EQ(params["name"], "lingua_debug");
  // Validation every 3 steps, each capped at eval.validation.max_steps (2) batches of 2 x 24 tokens.
  const auto evals = read_jsonl(dump / "metrics.eval.jsonl");
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals[0]["toy/tokens"], 2 * 2 * 24);
  // A tokenizer lingua.cpp does not have is refused, naming those it has; tiktoken needs its file.
  std::tie(rc, out) = run_cli_limited("train config=" + kLinguaConfig + " dump_dir=" + dump.string() +
                                      " data.tokenizer.name=gpt2");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "'gpt2' is not one of: bytes, sp, tiktoken, hf")) << out;
  std::tie(rc, out) = run_cli_limited("train config=" + kLinguaConfig + " dump_dir=" + dump.string() +
                                      " data.tokenizer.name=tiktoken");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "tiktoken: cannot read the rank file '/path/to/tokenizer'")) << out;
}

TEST(ConfigCli, ErrorsNameTheArgumentTheKeyAndTheLimit) {
  const std::string demo = std::string(LINGUA_SOURCE_DIR) + "/configs/demo.yaml";
  const fs::path dump = temp_dir("cli_limits");
  auto run = [&](const std::string& args) { return run_cli_limited("train config=" + demo + " dump_dir=" + dump.string() + " " + args); };
  auto [rc, out] = run("model.dim=abc");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "config key 'model.dim': expected an integer, got 'abc' (command-line argument 'model.dim=abc')"))
      << out;
  EXPECT_FALSE(has(out, "demo.yaml:")) << out;
  std::tie(rc, out) = run_cli_limited("train config=" + std::string(LINGUA_SOURCE_DIR) + "/configs");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "/configs is a directory, expected a YAML file")) << out;
  // Sizes that used to end in std::bad_alloc ("internal error") are refused naming the key.
  struct Case {
    const char* args;
    std::vector<const char*> says;
  };
  const Case cases[] = {
      {"model.head_dim=256 model.max_seqlen=2000000000", {"'model.max_seqlen' (2000000000)", "of memory"}},
      {"data.batch_size=100000000", {"data.batch_size", "2147483647"}},
      {"data.prefetch_size=1000000000", {"data.prefetch_size", "of memory"}},
      {"model.ffn_dim_multiplier=1e308", {"model.ffn_dim_multiplier (1e+308)", "2147483647"}},
      {"optim.lr=.nan", {"'optim.lr'", "finite"}},
      {"optim.beta1=1.5", {"'optim.beta1' must be in [0, 1)"}},
      {"threads=-2", {"'threads' must be >= 0"}},
  };
  for (const Case& c : cases) {
    std::tie(rc, out) = run(c.args);
    EXPECT_EQ(rc, 1) << c.args << ": " << out;
    EXPECT_FALSE(has(out, "internal error")) << out;
    for (const char* s : c.says) EXPECT_TRUE(has(out, s)) << c.args << ": " << out;
  }
}

TEST(ConfigCli, EvalAndGenerateValidateParamsJson) {
  const fs::path dump = tiny_cli_run("params_check");
  const std::string params = newest_params_json(dump);
  ASSERT_TRUE(fs::exists(params)) << params;
  const std::string original = [&] {
    std::ifstream f(params);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }();
  struct Case {
    const char* key;  // under "data"
    int value;
  };
  for (const Case& c : {Case{"batch_size", 0}, Case{"seq_len", 0}, Case{"seq_len", -1}}) {
    nlohmann::json j = nlohmann::json::parse(original);
    j["data"][c.key] = c.value;
    std::ofstream(params) << j.dump(1);
    for (const char* cmd : {"eval", "generate prompt=a"}) {
      auto [rc, out] = run_cli_limited(std::string(cmd) + " ckpt=" + dump.string(), 60);  // hung at 100% CPU before
      EXPECT_EQ(rc, 1) << cmd << " " << c.key << "=" << c.value << ": " << out;
      EXPECT_TRUE(has(out, params)) << out;
      EXPECT_TRUE(has(out, std::string("'data.") + c.key + "' must be >= 1")) << out;
    }
  }
  std::ofstream(params) << original;
  auto [rc, out] = run_cli_limited("eval ckpt=" + dump.string() + " batch_size=-1");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "'batch_size' must be >= 0")) << out;
}

TEST(ConfigCli, GenerateReadsTheWholePromptAndSaysWhenTheContextEndsIt) {
  const fs::path dump = tiny_cli_run("gen_context");  // model.max_seqlen = data.seq_len = 24
  // 10 bytes + BOS: 13 new tokens fill the context of 24, long before max_gen_len 300.
  auto [rc, out] = run_cli_limited("generate ckpt=" + dump.string() + " 'prompt=the whale ' max_gen_len=300 temperature=0");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(has(out, "=== prompt: the whale \n")) << out;  // the trailing space kept
  const std::regex note("note: stopped after ([0-9]+) of max_gen_len 300 new tokens: prompt \\(11 tokens\\) \\+ ([0-9]+) "
                        "reached model.max_seqlen 24");
  std::smatch m;
  if (std::regex_search(out, m, note)) {
    EXPECT_EQ(m[1], "13");
    EXPECT_EQ(m[2], "13");
  } else {
    ADD_FAILURE() << "no context note: " << out;
  }
  // A prompt that does not fit is an error naming both numbers.
  std::tie(rc, out) = run_cli_limited("generate ckpt=" + dump.string() + " prompt=" + std::string(30, 'x'));
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "31 tokens (BOS included)") && has(out, "model.max_seqlen, is 24")) << out;
  std::tie(rc, out) = run_cli_limited("generate ckpt=" + dump.string() + " prompt=a num_samples=0");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "'num_samples' must be >= 1")) << out;
  // Samples decode max_batch at a time; each draws from its own stream, so the batching leaves the
  // text as it is.
  const std::string sampling = "generate ckpt=" + dump.string() + " 'prompts=[\"the\", \"a\"]' num_samples=5 max_gen_len=6 seed=3";
  std::string one_batch, batches;
  std::tie(rc, one_batch) = run_cli_limited(sampling);
  ASSERT_EQ(rc, 0) << one_batch;
  std::tie(rc, batches) = run_cli_limited(sampling + " max_batch=2");
  ASSERT_EQ(rc, 0) << batches;
  EXPECT_EQ(batches, one_batch);
  size_t samples = 0;
  for (size_t at = one_batch.find("=== prompt:"); at != std::string::npos; at = one_batch.find("=== prompt:", at + 1))
    ++samples;
  EXPECT_EQ(samples, 10u) << one_batch;
}

TEST(ConfigCli, AnAllocationThatStillFailsIsReportedAsOutOfMemory) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "runs under a 3 GB address-space limit, which a CUDA driver may not start in";
  // A 2.7 GB shuffle buffer passes the named checks (it fits this machine) but not a 3 GB address space.
  const fs::path data = make_corpus("oom"), dump = temp_dir("oom_dump");
  auto [rc, out] = run_cli_limited("train dump_dir=" + dump.string() + " data.root_dir=" + data.string() +
                                       " data.sources.toy=1 device=cpu model.dim=32 model.n_layers=1 model.n_heads=2 "
                                       "model.multiple_of=16 data.seq_len=16 data.batch_size=2 "
                                       "data.prefetch_size=20000000 data.load_async=false steps=2",
                                   120, "ulimit -v 3000000; ");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "lingua train: error: out of memory")) << out;
  EXPECT_FALSE(has(out, "internal error")) << out;
}
