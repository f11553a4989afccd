// End-to-end tests of the trainer: exact resumption, recovery from an interrupted checkpoint,
// metrics and config files, init_ckpt_path, generation from a checkpoint, and the CLI's errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/core/cuda.h"
#include "lingua/generate/generate.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/optim/schedule.h"
#include "lingua/train/train_step.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

std::vector<float> weights_of(const std::string& ckpt_dir, const TrainConfig& cfg) {
  LoadedModel m = load_model(ckpt_dir);
  return m.model->params().host_values();
}

}  // namespace

TEST(Train, LossDecreasesAndFilesAreWritten) {
  fs::path data = make_corpus("basic");
  fs::path dump = temp_dir("basic_dump");
  TrainConfig c = tiny_config(data, dump);
  c.steps = 40;
  c.checkpoint.dump.keep = 2;
  TrainResult r = train(c, {nullptr, true});
  ASSERT_EQ(r.losses.size(), 40u);
  EXPECT_LT(r.losses.back(), r.losses.front() - 1.0);
  // Config written and loadable; checkpoints pruned to 2; metrics have Lingua's fields.
  TrainConfig back = parse_config<TrainConfig>({"config=" + (dump / "config.yaml").string()});
  EXPECT_EQ(config_to_yaml(back), config_to_yaml(c));
  auto ck = list_checkpoints((dump / "checkpoints").string());
  ASSERT_EQ(ck.size(), 2u);
  EXPECT_EQ(ck[0].step, 30);
  EXPECT_EQ(ck[1].step, 40);
  for (auto f : {"consolidated.safetensors", "optimizer.safetensors", "params.json", "train_state_00000.json"})
    EXPECT_TRUE(fs::exists(fs::path(ck[1].path) / f)) << f;
  auto metrics = read_jsonl(dump / "metrics.jsonl");
  ASSERT_GE(metrics.size(), 8u);
  for (auto k : {"global_step", "speed/wps", "speed/FLOPS", "speed/mfu", "speed/hfu", "speed/curr_iter_time", "speed/data_load_time",
                 "optim/grad_norm", "optim/lr", "optim/total_tokens", "memory/max_active_gib", "loss/out",
                 "data/skipped_lines"})
    EXPECT_TRUE(metrics.back().contains(k)) << k;
  EXPECT_EQ(metrics.back()["global_step"], 40);
  EXPECT_EQ(metrics.back()["optim/total_tokens"], 40 * 2 * 2 * 24);
  EXPECT_DOUBLE_EQ(metrics.back()["loss/out"].get<double>(), r.losses.back());
  EXPECT_GE(metrics.back()["data/skipped_lines"].get<int64_t>(), 1);  // the "{not json" line
  auto evals = read_jsonl(dump / "metrics.eval.jsonl");
  ASSERT_EQ(evals.size(), 4u);
  EXPECT_GT(evals[0]["toy/nll_per_token"].get<double>(), evals[3]["toy/nll_per_token"].get<double>());
}

TEST(Train, ResumeIsBitExact) {
  fs::path data = make_corpus("resume");
  // 20 steps straight.
  fs::path a = temp_dir("resume_straight");
  TrainResult ra = train(tiny_config(data, a), {nullptr, true});
  // 10 steps, stop (a crash right after the checkpoint at step 10), then resume to 20.
  fs::path b = temp_dir("resume_split");
  TrainResult rb1 = train(tiny_config(data, b), {[](int64_t s) { return s < 10; }, true});
  ASSERT_EQ(rb1.final_step, 10);
  TrainResult rb2 = train(tiny_config(data, b), {nullptr, true});
  EXPECT_EQ(rb2.start_step, 10);
  ASSERT_EQ(rb2.final_step, 20);
  std::vector<double> joined = rb1.losses;
  joined.insert(joined.end(), rb2.losses.begin(), rb2.losses.end());
  ASSERT_EQ(joined.size(), ra.losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], ra.losses[i]) << "step " << i + 1;
  // Final weights identical to the bit.
  TrainConfig c = tiny_config(data, a);
  EXPECT_EQ(weights_of((a / "checkpoints").string(), c), weights_of((b / "checkpoints").string(), c));
}

// One micro-batch per step: gradients over dead activations (the default) give the run of
// gradients in their own buffer, bit for bit, validation included.
void check_grads_in_activations_run(const std::string& device, const std::string& tag) {
  fs::path data = make_corpus(tag);
  std::vector<double> losses[2];
  std::vector<float> weights[2];
  for (int shared = 0; shared < 2; ++shared) {
    fs::path dump = temp_dir(tag + (shared ? "_shared" : "_own"));
    TrainConfig c = tiny_config(data, dump);
    c.device = device;
    c.grad_acc_steps = 1;
    c.model.grads_in_activations = shared == 1;
    losses[shared] = train(c, {nullptr, true}).losses;
    weights[shared] = weights_of((dump / "checkpoints").string(), c);
  }
  ASSERT_EQ(losses[0].size(), 20u);
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(weights[0], weights[1]);
}

TEST(Train, GradientsInActivationsGiveTheSameRun) { check_grads_in_activations_run("cpu", "grads_shared"); }

TEST(Train, InterruptedCheckpointFallsBackToThePreviousOne) {
  fs::path data = make_corpus("crash");
  fs::path d = temp_dir("crash_dump");
  TrainConfig c = tiny_config(data, d);
  train(c, {[](int64_t s) { return s < 10; }, true});
  // A save of step 15 that died midway: a temp dir and a step dir without the marker.
  fs::path root = d / "checkpoints";
  fs::create_directories(root / ".tmp_0000000015_999999");
  fs::create_directories(root / "0000000015");
  std::ofstream(root / "0000000015" / "consolidated.safetensors") << "garbage";
  TrainResult r = train(c, {nullptr, true});
  EXPECT_EQ(r.start_step, 10);
  EXPECT_EQ(r.final_step, 20);
}

TEST(Train, InitFromCheckpointAndShapeMismatch) {
  fs::path data = make_corpus("init");
  fs::path a = temp_dir("init_a");
  TrainConfig c = tiny_config(data, a);
  c.steps = 10;
  train(c, {nullptr, true});
  std::string ck = list_checkpoints((a / "checkpoints").string()).back().path;
  // Same shapes: starts from those weights (the first loss is the trained model's, not init's).
  TrainConfig c2 = tiny_config(data, temp_dir("init_b"));
  c2.steps = 1;
  c2.checkpoint.init_ckpt_path = ck;
  TrainResult r2 = train(c2, {nullptr, true});
  TrainConfig c3 = tiny_config(data, temp_dir("init_c"));
  c3.steps = 1;
  TrainResult r3 = train(c3, {nullptr, true});
  EXPECT_LT(r2.losses[0], r3.losses[0] - 0.5);
  // Other shapes: rejected with the tensor named.
  TrainConfig c4 = tiny_config(data, temp_dir("init_d"));
  c4.model.dim = 48;
  c4.checkpoint.init_ckpt_path = ck;
  try {
    train(c4, {nullptr, true});
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("tok_embeddings.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("[258, 32]"), std::string::npos) << m;
    EXPECT_NE(m.find("[258, 48]"), std::string::npos) << m;
  }
}

TEST(Train, ConfigErrors) {
  fs::path data = make_corpus("errors");
  TrainConfig c = tiny_config(data, temp_dir("errors_dump"));
  auto err = [](TrainConfig c) -> std::string {
    try {
      train(c, {nullptr, true});
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  TrainConfig x = c;
  x.dump_dir = "";
  EXPECT_NE(err(x).find("dump_dir"), std::string::npos);
  x = c;
  x.data.seq_len = 64;
  EXPECT_NE(err(x).find("model.max_seqlen"), std::string::npos);
  x = c;
  x.data.root_dir = "/nonexistent/corpus";
  EXPECT_NE(err(x).find("/nonexistent/corpus"), std::string::npos);
  x = c;
  x.data.sources = {{"missing_source", 1.0}};
  EXPECT_NE(err(x).find("missing_source"), std::string::npos);
}

TEST(Generate, GreedyDecodingFromACheckpointMatchesFullForward) {
  fs::path data = make_corpus("gen");
  fs::path d = temp_dir("gen_dump");
  TrainConfig c = tiny_config(data, d);
  c.steps = 30;
  train(c, {nullptr, true});
  LoadedModel m = load_model(d.string());
  EXPECT_EQ(m.checkpoint_dir, list_checkpoints((d / "checkpoints").string()).back().path);
  SamplingOptions opt;
  opt.temperature = 0;
  opt.max_gen_len = 12;
  PhiloxStream rng(1, 0);
  std::string out = generate_text(*m.exec, *m.tokenizer, "the whale", opt, rng).text;
  // Recompute greedily with full forwards (no KV cache).
  std::vector<int32_t> ids = m.tokenizer->encode("the whale", true, false);
  std::string expect;
  std::vector<int32_t> gen;
  int V = m.model->dims().vocab;
  for (int i = 0; i < 12; ++i) {
    std::vector<float> logits(ids.size() * V);
    m.exec->forward_logits(ids.data(), (int)ids.size(), logits.data());
    const float* last = logits.data() + (ids.size() - 1) * V;
    int32_t next = (int32_t)(std::max_element(last, last + V) - last);
    if (next == m.tokenizer->eos_id()) break;
    ids.push_back(next);
    gen.push_back(next);
  }
  EXPECT_EQ(out, m.tokenizer->decode(gen));
  // Stop strings cut the output.
  opt.until = {" "};
  std::string cut = generate_text(*m.exec, *m.tokenizer, "the whale", opt, rng).text;
  EXPECT_EQ(cut.find(' '), std::string::npos);
  // Sampling is reproducible for a seed.
  opt = SamplingOptions{};
  opt.top_k = 5;
  opt.top_p = 0.9;
  opt.max_gen_len = 10;
  PhiloxStream r1(7, 0), r2(7, 0);
  EXPECT_EQ(generate_text(*m.exec, *m.tokenizer, "a", opt, r1).text, generate_text(*m.exec, *m.tokenizer, "a", opt, r2).text);
}

TEST(Generate, SamplingRespectsTopKAndTopP) {
  std::vector<float> base = {0.0f, 3.0f, 1.0f, 2.5f, -1.0f};
  SamplingOptions o;
  o.temperature = 0;
  PhiloxStream rng(3, 0);
  auto l = base;
  EXPECT_EQ(sample_token(l.data(), 5, o, rng), 1);
  o.temperature = 1.0;
  o.top_k = 2;
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) {
    l = base;
    seen[sample_token(l.data(), 5, o, rng)]++;
  }
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(1) && seen.count(3));
  // p(1) = e^3 / (e^3 + e^2.5) = 0.622
  EXPECT_NEAR(seen[1] / 2000.0, 0.6225, 0.04);
  o.top_k = 0;
  o.top_p = 0.5;  // token 1 alone holds more than half of the mass
  for (int i = 0; i < 200; ++i) {
    l = base;
    EXPECT_EQ(sample_token(l.data(), 5, o, rng), 1);
  }
}


TEST(Cli, HelpAndErrors) {
  auto [rc, out] = run_cli("--help");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("train"), std::string::npos);
  std::tie(rc, out) = run_cli("train --help");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("optim.lr = 3e-04"), std::string::npos) << out;
  EXPECT_NE(out.find("data.tokenizer.name = bytes"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("train model.dimm=3");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("model.dimm"), std::string::npos) << out;
  EXPECT_NE(out.find("model.dim"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("train model.dim=big");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("'big'"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("generate prompt=hi");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("ckpt"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("frobnicate");
  EXPECT_EQ(rc, 2);
  std::tie(rc, out) = run_cli("generate ckpt=/nonexistent prompt=x");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("/nonexistent"), std::string::npos) << out;
}

TEST(Cli, PrepareTrainGenerateEval) {
  fs::path dir = temp_dir("cli");
  {
    std::ofstream f(dir / "book.txt");
    for (int i = 0; i < 200; ++i) f << "Call me Ishmael. Some years ago, never mind how long precisely.\n\n";
  }
  auto [rc, out] = run_cli("prepare out_dir=" + (dir / "data").string() + " source=book min_doc_chars=300 " +
                           (dir / "book.txt").string());
  ASSERT_EQ(rc, 0) << out;
  std::string common = "dump_dir=" + (dir / "dump").string() + " data.root_dir=" + (dir / "data").string() +
                       " 'data.sources={book: 1}' data.batch_size=2 data.seq_len=32 model.dim=32 model.n_layers=1 "
                       "model.n_heads=2 model.multiple_of=16 model.max_seqlen=64 steps=6 optim.warmup=2 "
                       "logging.freq=2 checkpoint.dump.every=3";
  std::tie(rc, out) = run_cli("train " + common);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("step 6/6"), std::string::npos) << out;
  EXPECT_NE(out.find("tok/s"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("generate ckpt=" + (dir / "dump").string() + " prompt=Call max_gen_len=8 temperature=0");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("=== prompt: Call"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("eval ckpt=" + (dir / "dump").string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("book: nll_per_token"), std::string::npos) << out;
}

// GPU training (skipped without a GPU): the loss curve follows the CPU reference's, two runs with
// the same seed are bitwise identical, and resuming from a checkpoint is exact on the GPU too.
TEST(TrainCuda, LossCurveMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  fs::path data = make_corpus("cuda_curve");
  TrainConfig c = tiny_config(data, temp_dir("cuda_curve_cpu"));
  c.steps = 100;
  c.checkpoint.dump.every = 0;
  c.checkpoint.eval.every = 0;
  TrainResult cpu = train(c, {nullptr, true});
  c.dump_dir = temp_dir("cuda_curve_gpu").string();
  c.device = "cuda";
  TrainResult gpu = train(c, {nullptr, true});
  ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
  double sum_diff = 0, sum = 0;
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 0.1 * cpu.losses[i]) << "step " << i + 1;
    sum_diff += std::fabs(gpu.losses[i] - cpu.losses[i]);
    sum += cpu.losses[i];
  }
  EXPECT_LT(sum_diff / sum, 0.02) << "mean relative loss difference over 100 steps";
  EXPECT_LT(gpu.losses.back(), gpu.losses.front() - 1.0);
}

TEST(TrainCuda, GradientsInActivationsGiveTheSameRun) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  check_grads_in_activations_run("cuda", "cuda_grads_shared");
}

// AdamW overfits one fixed batch on the CPU (the whole path: executor, optimizer, schedule off).
TEST(Train, AdamWOverfitsOneBatch) {
  ModelConfig mc;
  mc.dim = 32;
  mc.n_layers = 2;
  mc.n_heads = 4;
  mc.multiple_of = 16;
  mc.vocab_size = 31;
  mc.max_seqlen = 32;
  Transformer m(mc, resolve_dims(mc, 31));
  Executor ex(m);
  const int B = 2, T = 16;
  std::mt19937 g(0);
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (auto& x : tok) x = g() % 31;
  for (auto& x : tgt) x = g() % 31;
  OptimConfig oc;
  oc.lr = 1e-2;
  oc.weight_decay = 0.0;
  AdamW opt(m.params(), oc);
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    ex.zero_grads();
    LossSum l = ex.forward_backward(tok.data(), tgt.data(), B, T, 1.0f / (B * T));
    if (step == 0) first = l.nll / l.tokens;
    last = l.nll / l.tokens;
    opt.step(1.0);
  }
  EXPECT_GT(first, 3.0);  // about ln(31) or above at init
  EXPECT_LT(last, 0.05) << "first " << first;
}

// A parameter added between steps (after one of layer 0's, read by nothing): the step goes on with
// the new layout (recaptured on CUDA), the other weights train exactly as without it, and the new
// parameter gets moments of its own (zero: it has no gradient).
void check_layout_change_between_steps(Device device) {
  const ModelConfig mc = graph_test_model();
  const OptimConfig oc = graph_test_optim();
  const std::vector<int32_t> ids = graph_test_ids();
  auto run = [&](bool grow) {
    Transformer m(mc, resolve_dims(mc, mc.vocab_size));
    m.to_device(device);
    Executor ex(m);
    ex.set_grads_in_activations(true);
    auto opt = make_optimizer(m, oc);
    TrainStep ts(ex, *opt, true);
    std::vector<double> losses;
    for (int s = 0; s < 6; ++s) {
      if (grow && s == 3) {
        ParamSpec extra;
        extra.name = "layers.0.extra.weight";
        extra.shape = {3, 64};
        extra.init = ParamInit::trunc_normal(0.1f);
        m.params().add(extra, m.params().index("layers.0.feed_forward.w2.weight"));
      }
      const int32_t* a = ids.data() + (s % 2) * 2 * 33;
      LossSum l = ts.run({{a, a + 1, 2, 33}}, 1.0f / 66, lr_multiplier(oc, s, 6));
      losses.push_back(l.nll / l.tokens);
    }
    if (grow) {
      const int e = m.params().index("layers.0.extra.weight");
      EXPECT_EQ(opt->host_m(e), std::vector<float>(3 * 64, 0.0f));
      EXPECT_EQ(opt->groups()[0].params.size(), (size_t)m.params().size());
      if (device == Device::cuda) EXPECT_GE(ts.captures(), 2);
    }
    std::vector<float> w;
    for (int id : m.params().ids())
      if (m.params().info(id).name != "layers.0.extra.weight") {
        const std::vector<float> v = m.params().host_param(id);
        w.insert(w.end(), v.begin(), v.end());
      }
    return std::make_pair(losses, w);
  };
  auto plain = run(false), grown = run(true);
  EXPECT_EQ(plain.first, grown.first);
  EXPECT_EQ(plain.second, grown.second);
}

TEST(Train, LayoutChangeBetweenStepsIsFollowed) { check_layout_change_between_steps(Device::cpu); }
TEST(TrainCuda, LayoutChangeBetweenStepsIsFollowed) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  check_layout_change_between_steps(Device::cuda);
}

// Steps replayed from a CUDA graph equal eager steps bit for bit (loss, weights, moments), over
// two micro-batches per step, with an evaluation of another shape in between (which reallocates
// memory the graph points to: it must be captured again).
TEST(TrainCuda, GraphStepsEqualEagerSteps) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const ModelConfig mc = graph_test_model();
  const OptimConfig oc = graph_test_optim();
  const std::vector<int32_t> ids = graph_test_ids();
  // An evaluation of another shape after step 4.
  StepsRun eager = run_steps_on_gpu(mc, oc, ids, false, 8, 4), graph = run_steps_on_gpu(mc, oc, ids, true, 8, 4);
  EXPECT_TRUE(graph.graph_in_use);
  EXPECT_EQ(eager.losses, graph.losses);
  EXPECT_EQ(eager.weights, graph.weights);
  EXPECT_EQ(eager.moments, graph.moments);
  EXPECT_GE(graph.captures, 1);
  EXPECT_LE(graph.captures, 2);  // once, and again only if the evaluation moved memory
}

// Per-layer hooks run inside the captured step: prefix rows written by a hook (a device copy before
// block 0) train the same in graph-replayed and eager steps, bit for bit; changing the prefix rows
// after step 3 (then the hook after step 4) makes the step be captured again.
TEST(TrainCuda, GraphStepsWithPrefixRowsEqualEagerSteps) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const ModelConfig mc = graph_test_model();
  const OptimConfig oc = graph_test_optim();
  const std::vector<int32_t> ids = graph_test_ids();
  struct Prefix : LayerHooks {
    DeviceBuffer dev;
    Tensor values;
    Prefix() : dev(3 * 64 * sizeof(float)) {
      std::vector<float> h(3 * 64);
      for (size_t i = 0; i < h.size(); ++i) h[i] = std::sin(0.37f * (float)i);
      copy_to_device(dev.data(), h.data(), h.size() * sizeof(float));
      values = Tensor(dev.data(), {3, 64}, DType::f32, Device::cuda);
    }
    void before_forward(int l, const Tensor& x, const StepContext& ctx) override {
      if (l != 0 || ctx.seq.prefix == 0) return;
      for (int b = 0; b < ctx.seq.B; ++b)
        copy_row_blocks(x, 0, (int64_t)b * ctx.seq.S(), values, 0, 0, 1, ctx.seq.prefix);
    }
  } eager_hook, graph_hook;
  auto with = [](Prefix& h) {
    return [&h](int step, Executor& ex) {
      if (step == 0) {
        ex.add_hooks(&h);
        ex.set_prefix_rows(3);
      }
      if (step == 3) ex.set_prefix_rows(2);
      if (step == 4) ex.remove_hooks(&h);
    };
  };
  StepsRun eager = run_steps_on_gpu(mc, oc, ids, false, 6, -1, {}, with(eager_hook));
  StepsRun graph = run_steps_on_gpu(mc, oc, ids, true, 6, -1, {}, with(graph_hook));
  StepsRun plain = run_steps_on_gpu(mc, oc, ids, false, 6);
  EXPECT_TRUE(graph.graph_in_use);
  EXPECT_EQ(graph.captures, 2);  // at step 1, and at step 5 after the eager steps 3 and 4
  EXPECT_EQ(eager.losses, graph.losses);
  EXPECT_EQ(eager.weights, graph.weights);
  EXPECT_NE(eager.losses, plain.losses);  // the prefix rows matter
}

TEST(TrainCuda, RunsAreBitwiseIdenticalAndResumeIsExact) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  fs::path data = make_corpus("cuda_resume");
  auto cfg = [&](const fs::path& dump) {
    TrainConfig c = tiny_config(data, dump);
    c.device = "cuda";
    return c;
  };
  fs::path a = temp_dir("cuda_resume_a"), b = temp_dir("cuda_resume_b"), s = temp_dir("cuda_resume_split");
  TrainResult ra = train(cfg(a), {nullptr, true});
  TrainResult rb = train(cfg(b), {nullptr, true});
  ASSERT_EQ(ra.losses.size(), 20u);
  for (size_t i = 0; i < ra.losses.size(); ++i) EXPECT_EQ(ra.losses[i], rb.losses[i]) << "step " << i + 1;
  TrainResult r1 = train(cfg(s), {[](int64_t st) { return st < 10; }, true});
  TrainResult r2 = train(cfg(s), {nullptr, true});
  EXPECT_EQ(r2.start_step, 10);
  std::vector<double> joined = r1.losses;
  joined.insert(joined.end(), r2.losses.begin(), r2.losses.end());
  ASSERT_EQ(joined.size(), ra.losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], ra.losses[i]) << "step " << i + 1;
  TrainConfig c = cfg(a);
  EXPECT_EQ(weights_of((a / "checkpoints").string(), c), weights_of((s / "checkpoints").string(), c));
}
