#pragma once
// Helpers shared by the end-to-end tests in tests/: scratch directories, a tiny corpus, a tiny
// training config, metrics files and running the `lingua` binary.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/core/error.h"
#include "lingua/exec/executor.h"
#include "lingua/model/transformer.h"
#include "lingua/optim/schedule.h"
#include "lingua/train/train_step.h"

namespace lingua::test_e2e {

namespace fs = std::filesystem;

// An empty directory of this process (ctest runs each test in its own process).
inline fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lingua_test_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A small corpus of one source "toy": sentences from a tiny grammar, so there is something to
// learn, in two chunks of 60 documents (the first with one malformed line), and a validation file.
// Letters such as 'z', 'q', 'x' never occur.
inline fs::path make_corpus(const std::string& name) {
  fs::path root = temp_dir(name + "_corpus") / "data";
  fs::create_directories(root / "toy");
  std::mt19937 g(1);
  const char* subj[] = {"the whale", "a sailor", "the captain", "the sea"};
  const char* verb[] = {"sees", "follows", "fears", "loves"};
  const char* obj[] = {"the ship.", "a storm.", "the harpoon.", "the moon."};
  for (int c = 0; c < 2; ++c) {
    std::ofstream f(root / "toy" / ("toy.chunk.0" + std::to_string(c) + ".jsonl"));
    for (int d = 0; d < 60; ++d) {
      std::string text;
      for (int s = 0; s < 6; ++s) text += std::string(subj[g() % 4]) + " " + verb[g() % 4] + " " + obj[g() % 4] + " ";
      f << nlohmann::json({{"text", text}}).dump() << "\n";
      if (d == 7 && c == 0) f << "{not json\n";  // malformed lines are skipped and counted
    }
  }
  std::ofstream v(root / "toy" / "toy.val.jsonl");
  for (int d = 0; d < 4; ++d) v << nlohmann::json({{"text", "the whale sees the ship. a sailor fears a storm."}}).dump() << "\n";
  return root;
}

// A 2-layer byte-level model on the corpus above, on the CPU: 20 steps of 2 micro-batches,
// checkpoints and validation every 10 steps, metrics every 5.
inline TrainConfig tiny_config(const fs::path& data, const fs::path& dump) {
  TrainConfig c;
  c.name = "tiny";
  c.dump_dir = dump.string();
  c.device = "cpu";  // the GPU runs are the *Cuda tests
  c.steps = 20;
  c.grad_acc_steps = 2;
  c.data.root_dir = data.string();
  c.data.sources = {{"toy", 1.0}};
  c.data.batch_size = 2;
  c.data.seq_len = 24;
  c.data.prefetch_size = 3;
  c.data.load_async = true;
  c.model.dim = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.multiple_of = 16;
  c.model.max_seqlen = 32;
  c.optim.lr = 3e-3;
  c.optim.warmup = 3;
  c.checkpoint.dump.every = 10;
  c.checkpoint.eval.every = 10;
  c.logging.freq = 5;
  return c;
}

// Every regular file under dir (relative path -> bytes): to check that a command left it alone.
inline std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    files[fs::relative(e.path(), dir).string()] = s.str();
  }
  return files;
}

// A GPU run's loss curve against the CPU's: every step within 10%, the mean gap under 2%.
inline void expect_loss_curves_close(const std::vector<double>& cpu, const std::vector<double>& gpu) {
  ASSERT_EQ(gpu.size(), cpu.size());
  double diff = 0, sum = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_NEAR(gpu[i], cpu[i], 0.1 * cpu[i]) << "step " << i + 1;
    diff += std::fabs(gpu[i] - cpu[i]);
    sum += cpu[i];
  }
  EXPECT_LT(diff / sum, 0.02);
}

// At init a product of N(0, 0.02) factors is ~1e-4 of the residual stream, below what logits
// resolve: redraw every FFN weight N(0, s^2), s = (dim rank)^(-1/4), so that each FFN moves the
// logits by O(1) and a wrong merged weight shows. Seeded by the parameter's name: two models of one
// config get the same weights.
inline void make_ffns_matter(Transformer& m, const ModelConfig& c) {
  const double s = std::pow((double)c.dim * c.structured.rank, -0.25);
  ParamStore& p = m.params();
  for (int id : p.ids()) {
    const std::string& name = p.info(id).name;
    if (name.find("feed_forward") == std::string::npos) continue;
    std::mt19937 g((uint32_t)std::hash<std::string>{}(name));
    std::normal_distribution<float> n(0.0f, (float)s);
    std::vector<float> w((size_t)p.info(id).numel);
    for (float& x : w) x = n(g);
    p.set_param(id, w.data());
  }
}

// The message of the lingua::Error that f throws, "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream f(p);
  std::string line;
  while (std::getline(f, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Runs `lingua <args>` (LINGUA_BINARY, set by CMake); returns its exit code and stdout + stderr.
inline std::pair<int, std::string> run_cli(const std::string& args) {
  std::string cmd = std::string(LINGUA_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  return {WEXITSTATUS(rc), out};
}

// What run_steps_on_gpu leaves: the loss of each step, then every weight and second moment.
struct StepsRun {
  std::vector<double> losses;
  std::vector<float> weights, moments;
  bool graph_in_use = false;
  int captures = 0;
};

// The model, optimizer and ids of the graph-vs-eager tests (4 steps' worth of [2, 33]
// micro-batches of ids below `vocab`).
inline ModelConfig graph_test_model(int n_layers = 2) {
  ModelConfig mc;
  mc.dim = 64;
  mc.n_layers = n_layers;
  mc.n_heads = 2;
  mc.multiple_of = 32;
  mc.vocab_size = 97;
  mc.max_seqlen = 64;
  return mc;
}
inline OptimConfig graph_test_optim() {
  OptimConfig oc;
  oc.lr = 1e-2;
  oc.warmup = 2;
  return oc;
}
inline std::vector<int32_t> graph_test_ids(int vocab = 97) {
  std::vector<int32_t> ids(4 * 2 * 33);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (int32_t)((i * 7919 + 13) % vocab);
  return ids;
}

// `steps` training steps of a fresh model of `mc` on the GPU through TrainStep (captured as a
// CUDA graph or eager), the optimizer from make_optimizer(oc). Each step has two micro-batches
// of [2, 33] and [2, 32] tokens from `ids` (4 * 2 * 33 of them; the second half of the ids on
// odd steps); after step `eval_at` (-1: never) an evaluation of another shape reallocates memory.
// `check` sees the trained model and optimizer; `before_step` the executor before each step (hooks,
// prefix rows).
inline StepsRun run_steps_on_gpu(const ModelConfig& mc, const OptimConfig& oc, const std::vector<int32_t>& ids,
                                 bool graph, int steps, int eval_at = -1,
                                 const std::function<void(Transformer&, AdamW&)>& check = {},
                                 const std::function<void(int step, Executor&)>& before_step = {}) {
  const int B = 2, T = 33;
  StepsRun r;
  Transformer m(mc, resolve_dims(mc, mc.vocab_size));
  m.to_device(Device::cuda);
  Executor ex(m);
  auto opt = make_optimizer(m, oc);
  TrainStep ts(ex, *opt, graph);
  for (int s = 0; s < steps; ++s) {
    if (before_step) before_step(s, ex);
    const int32_t* a = ids.data() + (s % 2) * B * T;
    std::vector<MicroBatch> micro = {{a, a + 1, B, T}, {a + B * T, a + B * T + 1, B, T - 1}};
    LossSum l = ts.run(micro, 1.0f / (2 * B * T), lr_multiplier(oc, s, steps));
    r.losses.push_back(l.nll / l.tokens);
    if (s == eval_at) ex.forward_loss(ids.data(), ids.data() + 1, 3, 40);
  }
  r.graph_in_use = ts.graph_in_use();
  r.captures = ts.captures();
  r.weights = m.params().host_values();
  for (int id : m.params().ids()) {
    if (!m.params().trainable(id)) continue;  // (frozen: no moments)
    const std::vector<float> v = opt->host_v(id);
    r.moments.insert(r.moments.end(), v.begin(), v.end());
  }
  if (check) check(m, *opt);
  return r;
}

}  // namespace lingua::test_e2e
