// The trainer under faults: non-finite steps (stopped or skipped, never checkpointed), stop
// signals (a checkpoint, then an exit a job script can requeue on), and a dump_dir that holds one
// run (metrics without replayed steps, another model's checkpoints refused, one process at a time).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/core/cuda.h"
#include "lingua/train/run_dir.h"
#include "lingua/train/stop_signals.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// Writes NaN into the gradient of block 1's input during the backward of training step `at`
// (1-based; counted by block 1's backward calls, one per micro-batch).
struct PoisonGradient : LayerHooks {
  int at, micro, calls = 0;
  PoisonGradient(int at_step, int micro_per_step) : at(at_step), micro(micro_per_step) {}
  void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext&) override {
    if (layer != 1) return;
    if (calls++ / micro + 1 != at) return;
    poison(dx);
    if (dx_act.data != dx.data) poison(dx_act);
  }
  static void poison(const Tensor& t) {  // element 3 = NaN (f32 or bf16)
    const float nan = NAN;
    const uint16_t nan16 = 0x7FC0;
    const void* src = t.dtype == DType::f32 ? (const void*)&nan : (const void*)&nan16;
    char* dst = static_cast<char*>(t.data) + 3 * dtype_size(t.dtype);
    if (t.device == Device::cuda) copy_to_device(dst, src, dtype_size(t.dtype));  // eager steps only
    else std::memcpy(dst, src, dtype_size(t.dtype));
  }
};

std::vector<int64_t> logged_steps(const fs::path& p) {
  std::vector<int64_t> s;
  for (auto& j : read_jsonl(p)) s.push_back(j["global_step"].get<int64_t>());
  return s;
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

// The case: a learning rate that blows the model up. The run stops at the first
// non-finite step, names it and a tensor, and every checkpoint on disk has finite weights.
TEST(TrainReliability, NonFiniteStepStopsTheRunAndIsNeverCheckpointed) {
  fs::path data = make_corpus("nan_stop");
  fs::path d = temp_dir("nan_stop_dump");
  TrainConfig c = tiny_config(data, d);
  c.optim.lr = 1000;  // finite until step 4 (the checkpoint of step 2 is written)
  c.optim.warmup = 0;
  c.checkpoint.dump.every = 2;
  c.checkpoint.dump.keep = 1;
  c.checkpoint.eval.every = 0;
  c.steps = 40;
  const std::string err = error_of([&] { train(c, {nullptr, true}); });
  ASSERT_NE(err, "") << "lr 1000 trained 40 steps without a NaN";
  EXPECT_NE(err.find("is not finite"), std::string::npos) << err;
  EXPECT_NE(err.find("step "), std::string::npos) << err;
  EXPECT_NE(err.find("'"), std::string::npos) << "no tensor named: " << err;
  EXPECT_NE(err.find("optim.on_nonfinite=skip"), std::string::npos) << err;
  // Whatever was saved can be resumed: finite weights.
  const auto saved = list_checkpoints((d / "checkpoints").string());
  ASSERT_FALSE(saved.empty());
  for (auto& e : saved) {
    LoadedModel m = load_model(e.path);
    EXPECT_TRUE(all_finite(m.model->params().host_values())) << e.path;
  }
  // Running again resumes from a good checkpoint and stops at the same step with the same message.
  const std::string again = error_of([&] { train(c, {nullptr, true}); });
  EXPECT_EQ(again.substr(0, again.find(':')), err.substr(0, err.find(':')));
}

// One step with a NaN gradient: with on_nonfinite=skip it is not applied (the weights, moments
// and AdamW's step count stay), counted in the metrics, and training goes on; with stop it ends
// the run naming the step. A step is never half applied.
TEST(TrainReliability, NonFiniteStepIsSkippedOrStops) {
  fs::path data = make_corpus("nan_skip");
  for (std::string policy : {"skip", "stop"}) {
    fs::path d = temp_dir("nan_skip_" + policy);
    TrainConfig c = tiny_config(data, d);
    c.optim.on_nonfinite = policy;
    c.checkpoint.eval.every = 0;
    c.logging.freq = 1;
    PoisonGradient poison(7, c.grad_acc_steps);
    TrainHooks h{nullptr, true};
    h.at_start = [&](Executor& ex) { ex.add_hooks(&poison); };
    std::vector<float> w_end;
    h.at_end = [&](Executor& ex) { w_end = ex.model().params().host_values(); };
    if (policy == "stop") {
      const std::string err = error_of([&] { train(c, h); });
      EXPECT_NE(err.find("step 7 is not finite"), std::string::npos) << err;
      EXPECT_NE(err.find("gradient norm of group 'default' is"), std::string::npos) << err;
      EXPECT_NE(err.find("first non-finite gradient is 'tok_embeddings.weight'"), std::string::npos) << err;
      continue;
    }
    TrainResult r = train(c, h);
    ASSERT_EQ(r.final_step, 20);
    EXPECT_TRUE(std::isnan(r.losses[6]) == false);  // the loss of the forward is finite
    EXPECT_TRUE(all_finite(w_end));
    auto m = read_jsonl(d / "metrics.jsonl");
    ASSERT_EQ(m.size(), 20u);
    EXPECT_EQ(m[5]["optim/skipped_steps"], 0);
    EXPECT_EQ(m[6]["optim/skipped_steps"], 1);
    EXPECT_EQ(m[19]["optim/skipped_steps"], 1);
    EXPECT_TRUE(m[6]["optim/grad_norm"].is_null() || !std::isfinite(m[6]["optim/grad_norm"].get<double>()));
    // AdamW took 19 steps: the checkpoint's optimizer step count.
    std::ifstream st(d / "checkpoints" / "0000000020" / CheckpointFiles::train_state(0));
    EXPECT_EQ(nlohmann::json::parse(st)["optimizer_steps"], 19);
  }
}

TEST(TrainReliability, TooManySkippedStepsInARowStop) {
  fs::path data = make_corpus("nan_many");
  fs::path d = temp_dir("nan_many_dump");
  TrainConfig c = tiny_config(data, d);
  c.optim.on_nonfinite = "skip";
  c.optim.max_consecutive_skips = 2;
  c.checkpoint.eval.every = 0;
  struct Always : LayerHooks {
    void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext&) override {
      if (layer == 1) dx.f32()[0] = NAN;
    }
  } always;
  TrainHooks h{nullptr, true};
  h.at_start = [&](Executor& ex) { ex.add_hooks(&always); };
  const std::string err = error_of([&] { train(c, h); });
  EXPECT_NE(err.find("3 steps in a row were not finite (optim.max_consecutive_skips is 2)"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(d / "checkpoints" / "0000000010"));
}

TEST(TrainReliability, CheckpointWithNonFiniteWeightsIsRefused) {
  ModelConfig mc;
  mc.dim = 16, mc.n_layers = 1, mc.n_heads = 2, mc.multiple_of = 16, mc.max_seqlen = 8, mc.vocab_size = 11;
  Transformer m(mc, resolve_dims(mc, 11));
  const int id = m.params().index("layers.0.attention.wk.weight");
  std::vector<float> w = m.params().host_param(id);
  w[5] = INFINITY;
  w[9] = NAN;
  m.params().set_param(id, w.data());
  fs::path d = temp_dir("nonfinite_weights");
  const std::string err = error_of([&] { save_params(m.params(), (d / "w.safetensors").string()); });
  EXPECT_NE(err.find("parameter 'layers.0.attention.wk.weight' has 2 non-finite values"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(d / "w.safetensors"));
  EXPECT_FALSE(fs::exists(d / "w.safetensors.tmp"));
}

// A stop signal ends the run after the current step with a checkpoint of it; running again
// resumes exactly where the uninterrupted run would be.
TEST(TrainReliability, StopSignalWritesACheckpointAndResumesExactly) {
  fs::path data = make_corpus("signal");
  fs::path a = temp_dir("signal_straight");
  TrainResult straight = train(tiny_config(data, a), {nullptr, true});
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) {
    fs::path b = temp_dir("signal_" + std::to_string(sig));
    TrainConfig c = tiny_config(data, b);
    TrainResult first = train(c, {[sig](int64_t s) {
                                     if (s == 13) ::raise(sig);
                                     if (s == 13 && sig != SIGINT) ::raise(sig);  // repeated: still a clean stop
                                     return true;
                                   },
                                   true});
    EXPECT_EQ(first.stop_signal, sig);
    ASSERT_EQ(first.final_step, 13);
    EXPECT_TRUE(is_complete_checkpoint((b / "checkpoints" / "0000000013").string()));
    TrainResult second = train(c, {nullptr, true});
    EXPECT_EQ(second.start_step, 13);
    EXPECT_EQ(second.stop_signal, 0);
    std::vector<double> joined = first.losses;
    joined.insert(joined.end(), second.losses.begin(), second.losses.end());
    EXPECT_EQ(joined, straight.losses);
    const std::vector<int64_t> logged = logged_steps(b / "metrics.jsonl");
    for (size_t i = 1; i < logged.size(); ++i) EXPECT_LT(logged[i - 1], logged[i]) << "a step logged twice";
  }
  // The handlers are gone after the run: SIGUSR1's default action would end this test, so check
  // the disposition instead.
  struct sigaction now {};
  sigaction(SIGTERM, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
}

// Through the binary: SIGTERM gives a checkpoint and exit status 75; two SIGINTs stop at once.
TEST(TrainReliability, CliStopsOnSignals) {
  fs::path data = make_corpus("cli_signal");
  for (int twice = 0; twice < 2; ++twice) {
    fs::path d = temp_dir("cli_signal_" + std::to_string(twice));
    const std::string args = "train device=cpu dump_dir=" + d.string() + " data.root_dir=" + data.string() +
                             " 'data.sources={toy: 1.0}' data.batch_size=8 data.seq_len=256 model.dim=256 "
                             "model.n_layers=4 model.n_heads=4 model.multiple_of=16 model.max_seqlen=256 "
                             "steps=100000 logging.freq=1 checkpoint.dump.every=0 checkpoint.eval.every=0";
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::string cmd = std::string("exec ") + LINGUA_BINARY + " " + args + " >" + (d / "log").string() + " 2>&1";
      execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
      _exit(127);
    }
    // Steps of about a second on 2 cores: a signal arrives mid-step. Wait for the first one.
    auto wait_for = [&](const std::function<bool()>& done, const char* what) {
      const auto t0 = std::chrono::steady_clock::now();
      while (!done()) {
        ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(120)) << what;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    };
    // (a complete line: the trainer may be writing the next one)
    wait_for([&] { return fs::exists(d / "metrics.jsonl") && read_text_file((d / "metrics.jsonl").string()).find('\n') != std::string::npos; },
             "no step logged");
    int status = 0;
    if (twice) {
      kill(pid, SIGINT);
      // The second only after the first was seen (two pending signals of a kind merge into one).
      wait_for([&] { return read_text_file((d / "log").string()).find("stop requested") != std::string::npos; },
               "the first SIGINT was not acknowledged");
      kill(pid, SIGTERM);  // a repeated request (not Ctrl-C) changes nothing...
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      kill(pid, SIGINT);   // ...Ctrl-C again (100 ms or more later) stops at once
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)
          << status << "\n" << read_text_file((d / "log").string());
    } else {
      kill(pid, SIGTERM);
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << read_text_file((d / "log").string());
      EXPECT_EQ(WEXITSTATUS(status), kExitStoppedBySignal);
      auto last = latest_checkpoint((d / "checkpoints").string());
      ASSERT_TRUE(last.has_value());
      EXPECT_EQ(last->step, logged_steps(d / "metrics.jsonl").back());
      std::ifstream log(d / "log");
      std::string text((std::istreambuf_iterator<char>(log)), {});
      EXPECT_NE(text.find("stopped by SIGTERM at step"), std::string::npos) << text;
    }
  }
}

// After a crash and a resume, metrics.jsonl holds each logged step once.
TEST(TrainReliability, MetricsHoldEachStepOnceAfterResume) {
  fs::path data = make_corpus("metrics_once");
  fs::path d = temp_dir("metrics_once_dump");
  TrainConfig c = tiny_config(data, d);
  c.logging.freq = 1;
  train(c, {[](int64_t s) { return s < 17; }, true});  // a crash at 17: checkpoint 10, metrics to 17
  EXPECT_EQ(logged_steps(d / "metrics.jsonl").back(), 17);
  train(c, {nullptr, true});
  std::vector<int64_t> want;
  for (int64_t s = 1; s <= 20; ++s) want.push_back(s);
  EXPECT_EQ(logged_steps(d / "metrics.jsonl"), want);
  EXPECT_EQ(logged_steps(d / "metrics.eval.jsonl"), (std::vector<int64_t>{10, 20}));
}

TEST(TrainReliability, AnotherModelsCheckpointsAreRefused) {
  fs::path data = make_corpus("other_model");
  fs::path d = temp_dir("other_model_dump");
  TrainConfig c = tiny_config(data, d);
  c.steps = 10;
  train(c, {nullptr, true});
  const std::string before = read_text_file((d / "config.yaml").string());
  const auto metrics_before = read_jsonl(d / "metrics.jsonl").size();
  TrainConfig other = c;
  other.model.dim = 48;
  other.model.n_layers = 3;
  other.steps = 20;
  const std::string err = error_of([&] { train(other, {nullptr, true}); });
  EXPECT_NE(err.find("model.dim: 32 -> 48"), std::string::npos) << err;
  EXPECT_NE(err.find("model.n_layers: 2 -> 3"), std::string::npos) << err;
  EXPECT_EQ(err.find("steps:"), std::string::npos) << "an allowed change listed as refused: " << err;
  EXPECT_EQ(read_text_file((d / "config.yaml").string()), before);
  EXPECT_EQ(read_jsonl(d / "metrics.jsonl").size(), metrics_before);
  // Changed optimizer settings are fine (and listed).
  TrainConfig longer = c;
  longer.steps = 12;
  longer.optim.lr = 1e-3;
  ConfigDiff diff = diff_configs(c, longer);
  EXPECT_TRUE(diff.refused.empty());
  ASSERT_EQ(diff.allowed.size(), 2u);
  EXPECT_EQ(diff.allowed[0], "optim.lr: 0.003 -> 0.001");
  EXPECT_EQ(diff.allowed[1], "steps: 10 -> 12");
  EXPECT_EQ(train(longer, {nullptr, true}).final_step, 12);
  // A config with values of any shape (Lingua's eval.harness) equals itself read back from params.json.
  const TrainConfig lingua = parse_config<TrainConfig>({std::string("config=") + LINGUA_SOURCE_DIR + "/configs/lingua_debug.yaml"});
  const TrainConfig back = config_from_json_text<TrainConfig>(config_to_json(lingua), "params.json");
  const ConfigDiff none = diff_configs(back, lingua);
  EXPECT_TRUE(none.allowed.empty() && none.refused.empty()) << (none.allowed.empty() ? "" : none.allowed[0]);
  // A number in a free-form key, written another way in params.json, is the same value; another
  // number is not.
  TrainConfig grown = c;
  grown.growth.source.yaml = "{n_layers: 1, norm_eps: 2.0e-5}";
  const TrainConfig grown_back = config_from_json_text<TrainConfig>(config_to_json(grown), "params.json");
  EXPECT_TRUE(diff_configs(grown_back, grown).refused.empty());
  TrainConfig other_eps = grown;
  other_eps.growth.source.yaml = "{n_layers: 1, norm_eps: 3.0e-5}";
  ASSERT_EQ(diff_configs(grown_back, other_eps).refused.size(), 1u);
  EXPECT_EQ(diff_configs(grown_back, other_eps).refused[0].rfind("growth.source.norm_eps: ", 0), 0u);
}

TEST(TrainReliability, OneProcessPerDumpDir) {
  fs::path data = make_corpus("lock");
  fs::path d = temp_dir("lock_dump");
  TrainConfig c = tiny_config(data, d);
  RunDir held(c, (d / "checkpoints").string());  // as if another process trained here
  const std::string err = error_of([&] { train(c, {nullptr, true}); });
  EXPECT_NE(err.find("is in use by another lingua process (pid " + std::to_string(getpid())), std::string::npos)
      << err;
}

TEST(TrainReliability, UnwritableDumpDirIsNamed) {
  fs::path data = make_corpus("readonly");
  fs::path d = temp_dir("readonly_dump");
  TrainConfig c = tiny_config(data, d / "run");
  fs::permissions(d, fs::perms::owner_read | fs::perms::owner_exec);
  const bool root_user = ::access(d.c_str(), W_OK) == 0;  // root writes anyway
  const std::string err = root_user ? "" : error_of([&] { train(c, {nullptr, true}); });
  fs::permissions(d, fs::perms::owner_all);
  // /proc takes no new directories, even from root.
  c.dump_dir = "/proc/self/lingua_run";
  EXPECT_NE(error_of([&] { train(c, {nullptr, true}); }).find("cannot create dump_dir '/proc/self/lingua_run'"),
            std::string::npos);
  // A file where the directory should be.
  std::ofstream(d / "file") << "x";
  c.dump_dir = (d / "file").string();
  EXPECT_NE(error_of([&] { train(c, {nullptr, true}); }).find("exists and is not a directory"), std::string::npos);
  if (root_user) GTEST_SKIP() << "running as root: the read-only directory does not apply";
  EXPECT_NE(err.find("cannot create dump_dir '" + (d / "run").string() + "'"), std::string::npos) << err;
}

// On the GPU, eager steps: the skipped step leaves the weights, moments and step count alone.
TEST(TrainReliabilityCuda, NonFiniteStepIsSkipped) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  fs::path data = make_corpus("nan_skip_cuda");
  fs::path d = temp_dir("nan_skip_cuda_dump");
  TrainConfig c = tiny_config(data, d);
  c.device = "cuda";
  c.cuda_graph = false;  // the poison is written from the host at one step
  c.optim.on_nonfinite = "skip";
  c.checkpoint.eval.every = 0;
  c.logging.freq = 1;
  PoisonGradient poison(7, c.grad_acc_steps);
  TrainHooks h{nullptr, true};
  h.at_start = [&](Executor& ex) { ex.add_hooks(&poison); };
  TrainResult r = train(c, h);
  ASSERT_EQ(r.final_step, 20);
  auto m = read_jsonl(d / "metrics.jsonl");
  EXPECT_EQ(m[5]["optim/skipped_steps"], 0);
  EXPECT_EQ(m[6]["optim/skipped_steps"], 1);
  std::ifstream st(d / "checkpoints" / "0000000020" / CheckpointFiles::train_state(0));
  EXPECT_EQ(nlohmann::json::parse(st)["optimizer_steps"], 19);
  LoadedModel lm = load_model((d / "checkpoints").string());
  EXPECT_TRUE(all_finite(lm.model->params().host_values()));
}

// Captured steps: the learning rate that blows the model up stops the run; the step that went
// non-finite inside the CUDA graph was skipped there, so every checkpoint is finite.
TEST(TrainReliabilityCuda, NonFiniteStepStopsWithGraphs) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  fs::path data = make_corpus("nan_graph");
  fs::path d = temp_dir("nan_graph_dump");
  TrainConfig c = tiny_config(data, d);
  c.device = "cuda";
  c.optim.lr = 1000;
  c.optim.warmup = 0;
  c.checkpoint.dump.every = 2;
  c.checkpoint.eval.every = 0;
  c.steps = 60;
  const std::string err = error_of([&] { train(c, {nullptr, true}); });
  ASSERT_NE(err, "") << "lr 1000 trained 60 steps without a NaN on the GPU";
  EXPECT_NE(err.find("is not finite"), std::string::npos) << err;
  // Skipping instead: the non-finite steps are replays of the captured graph (the first two steps
  // of a shape run eagerly), skipped on the device; the run ends with finite weights.
  c.dump_dir = temp_dir("nan_graph_skip").string();
  c.optim.on_nonfinite = "skip";
  c.optim.max_consecutive_skips = 1000;
  c.logging.freq = 1;
  TrainResult r = train(c, {nullptr, true});
  EXPECT_EQ(r.final_step, 60);
  const auto m = read_jsonl(fs::path(c.dump_dir) / "metrics.jsonl");
  int64_t skipped_after_capture = 0;
  for (size_t i = 1; i < m.size(); ++i)
    if (m[i]["global_step"].get<int64_t>() > 2)
      skipped_after_capture += m[i]["optim/skipped_steps"].get<int64_t>() - m[i - 1]["optim/skipped_steps"].get<int64_t>();
  EXPECT_GT(skipped_after_capture, 0) << "no captured step was non-finite";
  for (auto& e : list_checkpoints((fs::path(c.dump_dir) / "checkpoints").string())) {
    LoadedModel lm = load_model(e.path);
    EXPECT_TRUE(all_finite(lm.model->params().host_values())) << e.path;
  }
}

// checkpoint.continue_training_from_init: a new dump_dir continues another run exactly (weights,
// moments, step, data position); a weights-only checkpoint cannot be continued.
TEST(TrainReliability, ContinueTrainingFromInitIsExact) {
  fs::path data = make_corpus("continue_init");
  TrainResult straight = train(tiny_config(data, temp_dir("continue_straight")), {nullptr, true});
  fs::path first = temp_dir("continue_first");
  TrainResult r1 = train(tiny_config(data, first), {[](int64_t s) { return s < 10; }, true});
  TrainConfig c = tiny_config(data, temp_dir("continue_second"));
  c.checkpoint.init_ckpt_path = (first / "checkpoints" / "0000000010").string();
  c.checkpoint.continue_training_from_init = true;
  TrainResult r2 = train(c, {nullptr, true});
  EXPECT_EQ(r2.start_step, 10);
  std::vector<double> joined = r1.losses;
  joined.insert(joined.end(), r2.losses.begin(), r2.losses.end());
  EXPECT_EQ(joined, straight.losses);
  // A weights-only checkpoint: nothing to continue from.
  LoadedModel m = load_model((first / "checkpoints").string());
  fs::path weights = temp_dir("continue_weights");
  const std::string only = save_model_checkpoint(weights.string(), 10, m.config, *m.model);
  c.dump_dir = temp_dir("continue_third").string();
  c.checkpoint.init_ckpt_path = only;
  EXPECT_NE(error_of([&] { train(c, {nullptr, true}); }).find("holds weights only"), std::string::npos);
}
