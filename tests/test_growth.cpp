// Model growth end to end (issue 16): `lingua grow` writes a grown checkpoint from a trained one
// (the source left as it was); a run started from it with checkpoint.init_ckpt_path keeps the
// source's function (G_zero: its first loss is the source model's loss on the same batch) and reads
// on from where the source's data stopped; `lingua grow plan` prints PRTS's guideline.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/core/cuda.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// The run `c` stopped after each step in `stops` (a crash: no checkpoint beyond the regular ones)
// and started again finishes with the losses of the uninterrupted run `whole`, bitwise.
void expect_resumes_bitwise(const TrainConfig& c, const TrainResult& whole, std::initializer_list<int> stops,
                            const std::string& name) {
  TrainHooks quiet;
  quiet.quiet = true;
  for (int k : stops) {
    TrainConfig r = c;
    r.dump_dir = temp_dir(name + "_stop" + std::to_string(k)).string();
    TrainHooks stop = quiet;
    stop.after_step = [k](int64_t step) { return step < k; };
    ASSERT_EQ(train(r, stop).final_step, k);
    const TrainResult rest = train(r, quiet);
    ASSERT_EQ(rest.final_step, c.steps);
    const int every = (int)c.checkpoint.dump.every;
    ASSERT_EQ(rest.start_step, k - k % every) << "resumed from the newest checkpoint";
    for (size_t i = 0; i < rest.losses.size(); ++i)
      EXPECT_EQ(rest.losses[i], whole.losses[rest.start_step + i]) << "stopped at " << k << ", step " << rest.start_step + i + 1;
  }
}

// A 4-layer run that trains 2 layers for growth_step steps, then grows with `op` (list
// [0, -1, 1, -1] for the operators with new layers), checkpoints every `every` steps, no validation.
TrainConfig growth_run_config(const fs::path& data, const std::string& name, int64_t steps, int64_t growth_step,
                              const std::string& op, int64_t every) {
  TrainConfig c = tiny_config(data, temp_dir(name));
  c.steps = steps;
  c.checkpoint.dump.every = every;
  c.checkpoint.eval.every = 0;
  c.model.n_layers = 4;
  c.growth.step = growth_step;
  c.growth.source.yaml = "{n_layers: 2}";
  c.growth.op = op;
  if (op == "zero" || op == "random") c.growth.stacking_list = std::vector<int>{0, -1, 1, -1};
  return c;
}

}  // namespace

TEST(GrowCli, GrownRunContinuesTheSourcesFunctionAndData) {
  const fs::path data = make_corpus("grow");
  const fs::path src = temp_dir("grow_src");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig sc = tiny_config(data, src);
  sc.steps = 10;
  sc.checkpoint.eval.every = 0;
  train(sc, quiet);
  const std::string ck = (src / "checkpoints" / checkpoint_dir_name(10)).string();
  // The source's run one step further: its loss at step 11 is the step-10 model on batch 11.
  const fs::path cont = temp_dir("grow_cont");
  fs::copy(src, cont, fs::copy_options::recursive);
  TrainConfig cc = sc;
  cc.dump_dir = cont.string();
  cc.steps = 11;
  const TrainResult next = train(cc, quiet);
  ASSERT_EQ(next.losses.size(), 1u);
  const auto files = snapshot(src);

  // G_zero: 2 -> 4 layers, the new ones identity blocks.
  const fs::path grown = temp_dir("grow_out");
  auto [rc, out] = run_cli("grow ckpt=" + src.string() + " n_layers=4 op=zero stacking_list='[0, -1, 1, -1]' out=" +
                           grown.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("G_zero, 2 -> 4 layers"), std::string::npos) << out;
  const fs::path gck = grown / checkpoint_dir_name(0);
  ASSERT_TRUE(is_complete_checkpoint(gck.string()));
  const nlohmann::json rec = nlohmann::json::parse(read_text_file((gck / CheckpointFiles::growth).string()));
  EXPECT_EQ(rec["operator"], "zero");
  EXPECT_EQ(rec["stacking_list"], nlohmann::json({0, -1, 1, -1}));
  EXPECT_EQ(rec["source_step"], 10);
  EXPECT_TRUE(fs::exists(gck / CheckpointFiles::train_state(0))) << "the source's data-loader state goes along";
  EXPECT_EQ(snapshot(src), files) << "the source is never written to";

  // Training the grown model: a fresh optimizer and schedule, the data read on from step 11.
  TrainConfig tc = sc;
  tc.dump_dir = temp_dir("grow_target").string();
  tc.model.n_layers = 4;
  tc.steps = 3;
  tc.checkpoint.init_ckpt_path = grown.string();  // (its root: the newest checkpoint)
  const TrainResult r = train(tc, quiet);
  ASSERT_EQ(r.start_step, 0);
  EXPECT_NEAR(r.losses[0], next.losses[0], 1e-5) << "G_zero keeps the function, and the batch is the source's next";
  // Without the data state the first batch is the corpus's first: another loss.
  tc.dump_dir = temp_dir("grow_target_fresh").string();
  tc.checkpoint.init_data_state = false;
  const TrainResult fresh = train(tc, quiet);
  EXPECT_GT(std::abs(fresh.losses[0] - next.losses[0]), 1e-4);

  // G_split: a 1.5x wider FFN, the same function; its first loss too is the source's next one.
  const fs::path split = temp_dir("grow_split");
  std::tie(rc, out) = run_cli("grow ckpt=" + ck + " ffn_dim_multiplier=1.5 op=split seed=3 out=" + split.string());
  ASSERT_EQ(rc, 0) << out;
  TrainConfig wc = sc;
  wc.dump_dir = temp_dir("grow_split_target").string();
  wc.model.ffn_dim_multiplier = 1.5;
  wc.steps = 2;
  wc.checkpoint.init_ckpt_path = split.string();
  EXPECT_NEAR(train(wc, quiet).losses[0], next.losses[0], 1e-5);

  // G_stack with the default list; a mismatched target is refused naming the key.
  const fs::path stacked = temp_dir("grow_stack");
  std::tie(rc, out) = run_cli("grow ckpt=" + ck + " n_layers=6 out=" + stacked.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("stacking list [0, 1, 0, 1, 0, 1]"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("grow ckpt=" + ck + " n_layers=5 out=" + temp_dir("grow_bad").string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("stacking_list"), std::string::npos) << out;

  std::tie(rc, out) = run_cli("grow plan params=7e9 tokens=2e12");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("growth timing d = 11.11B tokens"), std::string::npos) << out;
}

// Growth inside one run (growth.*): the source model trains steps 1-4, grows (G_zero, 2 -> 4
// layers), the grown model trains steps 5-8. It equals PRTS's two jobs (train the source; lingua
// grow; train the grown model from it) bitwise, keeps the function at the growth (G_zero) with the
// data read on, and a run stopped anywhere, either side of the growth, resumes bitwise.
TEST(GrowthRun, EqualsTheTwoJobsAndResumesBitwiseAcrossTheGrowth) {
  const fs::path data = make_corpus("growrun");
  TrainHooks quiet;
  quiet.quiet = true;
  const TrainConfig c = growth_run_config(data, "growrun", 8, 4, "zero", 2);
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 8u);
  EXPECT_EQ(whole.final_step, 8);
  const fs::path root = fs::path(c.dump_dir) / "checkpoints";
  EXPECT_EQ(read_params_json((root / checkpoint_dir_name(4) / CheckpointFiles::params).string()).model.n_layers, 2);
  EXPECT_EQ(read_params_json((root / checkpoint_dir_name(8) / CheckpointFiles::params).string()).model.n_layers, 4);
  const std::string yaml = read_text_file((fs::path(c.dump_dir) / "config.yaml").string());
  EXPECT_NE(yaml.find("n_layers: 4"), std::string::npos) << "config.yaml is the run's config, with the target";

  // The two jobs.
  TrainConfig a = tiny_config(data, temp_dir("growrun_src"));
  a.steps = 4;
  a.checkpoint.dump.every = 2;
  a.checkpoint.eval.every = 0;
  const TrainResult ra = train(a, quiet);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ra.losses[i], whole.losses[i]) << "step " << i + 1;
  const fs::path grown = temp_dir("growrun_grown");
  auto [rc, out] = run_cli("grow ckpt=" + a.dump_dir + " n_layers=4 op=zero stacking_list='[0, -1, 1, -1]' out=" +
                           grown.string());
  ASSERT_EQ(rc, 0) << out;
  TrainConfig b = a;
  b.dump_dir = temp_dir("growrun_big").string();
  b.model.n_layers = 4;
  b.checkpoint.init_ckpt_path = grown.string();
  const TrainResult rb = train(b, quiet);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(rb.losses[i], whole.losses[4 + i]) << "step " << i + 5;
  // G_zero keeps the function: step 5's loss is the source model's on batch 5 (the data read on).
  const fs::path cont = temp_dir("growrun_cont");
  fs::copy(a.dump_dir, cont, fs::copy_options::recursive);
  TrainConfig cc = a;
  cc.dump_dir = cont.string();
  cc.steps = 5;
  EXPECT_NEAR(train(cc, quiet).losses.at(0), whole.losses[4], 1e-5);

  // Stopped after step k (a crash: no checkpoint beyond every 2 steps), then run again.
  expect_resumes_bitwise(c, whole, {3, 4, 5, 7}, "growrun");
}

// growth.carry_moments: the grown model starts with the source's moments (and AdamW's step count)
// mapped like the weights; the grown model's first update differs from a fresh optimizer's.
TEST(GrowthRun, CarriedMomentsChangeTheFirstUpdateAndErrorsNameTheKey) {
  const fs::path data = make_corpus("growrun_m");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growrun_fresh", 6, 3, "stack", 10);  // G_stack, [0, 1, 0, 1]
  const TrainResult fresh = train(c, quiet);
  c.dump_dir = temp_dir("growrun_carry").string();
  c.growth.carry_moments = true;
  const TrainResult carried = train(c, quiet);
  ASSERT_EQ(carried.losses.size(), 6u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(carried.losses[i], fresh.losses[i]) << "the same until the first grown update";
  // (The first grown step runs at the restarted warmup's learning rate 0: its update is step 5's.)
  EXPECT_NE(carried.losses[5], fresh.losses[5]);
  for (double l : carried.losses) EXPECT_TRUE(std::isfinite(l));
  // Across a wider model dimension (G_zero 16 -> 32): carried too, and a stopped run resumes bitwise.
  TrainConfig wide = growth_run_config(data, "growrun_carry_dim", 6, 3, "zero", 1);
  wide.model.n_kv_heads.reset();
  wide.model.head_dim = 8;
  wide.growth.stacking_list = std::vector<int>{0, -1, 1, -1};
  wide.growth.source.yaml = "{n_layers: 2, dim: 16, n_heads: 2}";
  wide.growth.carry_moments = true;
  const TrainResult wide_run = train(wide, quiet);
  ASSERT_EQ(wide_run.losses.size(), 6u);
  for (double l : wide_run.losses) EXPECT_TRUE(std::isfinite(l));
  expect_resumes_bitwise(wide, wide_run, {4}, "growrun_carry_dim");

  auto error_of = [&](const std::function<void(TrainConfig&)>& edit) {
    TrainConfig e = c;
    e.dump_dir = temp_dir("growrun_err").string();
    edit(e);
    try {
      train(e, quiet);
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of([](TrainConfig& e) { e.growth.source.yaml = "{n_layer: 2}"; }).find("growth.source"),
            std::string::npos);
  EXPECT_NE(error_of([](TrainConfig& e) { e.growth.source.yaml = "{n_layers: 3}"; }).find("stacking_list"),
            std::string::npos);
  EXPECT_NE(error_of([](TrainConfig& e) { e.growth.step = 6; }).find("growth.step"), std::string::npos);
  EXPECT_NE(error_of([](TrainConfig& e) { e.growth.source.yaml = "{n_layers: 2, dim: 64}"; }).find("model.dim"),
            std::string::npos);
}

// The same on the GPU with CUDA graphs (G_random: the ramp's m changes each step inside the
// captured step): a run stopped either side of the growth resumes bitwise, and the grown phase
// captures its own graph.
TEST(GrowthRunCuda, ResumesBitwiseAcrossTheGrowthWithGraphs) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const fs::path data = make_corpus("growrun_cuda");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growrun_cuda", 8, 4, "random", 2);  // (m read by the captured step)
  c.device = "cuda";
  c.growth.ramp_steps = 3;
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 8u);
  EXPECT_GE(whole.graph_captures, 2) << "one graph per model";
  for (double l : whole.losses) EXPECT_TRUE(std::isfinite(l));
  expect_resumes_bitwise(c, whole, {3, 5}, "growrun_cuda");
  // In width too (the masked weights' compute views read by the captured step).
  TrainConfig w = c;
  w.dump_dir = temp_dir("growrun_cuda_width").string();
  w.model.n_kv_heads.reset();
  w.model.head_dim = 8;
  w.growth.source.yaml = "{n_layers: 2, dim: 16, n_heads: 2}";
  w.growth.ramp_steps = 1;  // ffn 4-5, dim 5-6, heads 6-7
  const TrainResult wide = train(w, quiet);
  ASSERT_EQ(wide.losses.size(), 8u);
  EXPECT_GE(wide.graph_captures, 2);
  for (double l : wide.losses) EXPECT_TRUE(std::isfinite(l));
  expect_resumes_bitwise(w, wide, {5, 6}, "growrun_cuda_width");
}

// G_random in a run: new random layers ramped in over growth.ramp_steps. At the growth the model
// computes the source's function (m = 0: the first grown loss is the source's on the next batch),
// and a run stopped during the ramp resumes bitwise.
TEST(GrowthRun, RandomLayersRampInAndResumeBitwise) {
  const fs::path data = make_corpus("growrun_random");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growrun_random", 9, 4, "random", 1);
  c.growth.ramp_steps = 3;
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 9u);
  // The source run one step further.
  TrainConfig a = tiny_config(data, temp_dir("growrun_random_src"));
  a.steps = 4;
  a.checkpoint.eval.every = 0;
  train(a, quiet);
  a.steps = 5;
  EXPECT_NEAR(train(a, quiet).losses.at(0), whole.losses[4], 1e-5) << "m = 0 at the growth: the source's function";
  expect_resumes_bitwise(c, whole, {5, 6}, "growrun_random");
  // (G_zero, the other operator with new layers, keeps the function at the growth too.)
  TrainConfig z = c;
  z.dump_dir = temp_dir("growrun_random_zero").string();
  z.growth.op = "zero";
  EXPECT_NEAR(train(z, quiet).losses.at(4), whole.losses[4], 1e-5) << "G_zero keeps the function too";
}

// G_random in width, in a run: 2 layers of dim 16 (2 heads of 8) grow to 4 layers of dim 32 (4
// heads), the new layers, FFN units, coordinates and heads ramped in (growth_ramp.h). At the growth
// the model computes the source's function (every m = 0, model.norm_eps scaled by 16 / 32), and a
// run stopped during the ramps resumes bitwise.
TEST(GrowthRun, RandomWidthRampsInAndResumesBitwise) {
  const fs::path data = make_corpus("growrun_rwidth");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growrun_rwidth", 9, 4, "random", 1);
  c.model.n_kv_heads.reset();
  c.model.head_dim = 8;
  c.model.norm_eps = 1e-5f;
  c.growth.source.yaml = "{n_layers: 2, dim: 16, n_heads: 2, norm_eps: 2.0e-5}";
  c.growth.ramp_steps = 2;  // depth and ffn 4-6, dim 6-8, heads 8-10
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 9u);
  for (double l : whole.losses) EXPECT_TRUE(std::isfinite(l));
  TrainConfig a = tiny_config(data, temp_dir("growrun_rwidth_src"));
  a.model = growth_source_model(c);
  a.steps = 4;
  a.checkpoint.eval.every = 0;
  train(a, quiet);
  a.steps = 5;
  EXPECT_NEAR(train(a, quiet).losses.at(0), whole.losses[4], 1e-5) << "every m = 0 at the growth: the source's function";
  expect_resumes_bitwise(c, whole, {5, 7}, "growrun_rwidth");
}

// G_learn in a run: the map is learned on the batches after the source's (growth.learn_steps of
// them, counted in the FLOPs), then training reads on after those; a run stopped after the
// growth resumes bitwise (it learns the map again from the checkpoint of the growth step).
TEST(GrowthRun, LearnedMapThenTrainingResumesBitwise) {
  const fs::path data = make_corpus("growrun_learn");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growrun_learn", 7, 4, "learn", 2);
  c.logging.freq = 1;
  c.growth.learn_steps = 3;
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 7u);
  TrainConfig st = c;
  st.dump_dir = temp_dir("growrun_learn_stack").string();
  st.growth.op = "stack";
  const TrainResult stacked = train(st, quiet);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(whole.losses[i], stacked.losses[i]);
  EXPECT_NE(whole.losses[4], stacked.losses[4]) << "another map, and later batches";
  // The FLOPs of step 5 include the map's 3 batches (forward and backward of the grown model).
  const auto metrics = read_jsonl(fs::path(c.dump_dir) / "metrics.jsonl");
  const auto smetrics = read_jsonl(fs::path(st.dump_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 7u);
  const double per_step_big = metrics[6]["optim/total_flops"].get<double>() - metrics[5]["optim/total_flops"].get<double>();
  EXPECT_NEAR(metrics[4]["optim/total_flops"].get<double>() - smetrics[4]["optim/total_flops"].get<double>(),
              per_step_big * 3 / c.grad_acc_steps, 1e-6 * per_step_big);
  expect_resumes_bitwise(c, whole, {5, 6}, "growrun_learn");
}

// G_learn in width, in a run: 2 layers with a 64-unit FFN grow to 4 layers of 96 units, the map
// (depth mix and the FFN's expansion matrices) learned for 3 batches and its loss logged; the
// map's first loss is that of its start, G_split (which keeps the source's function), on the same
// batch: the split run's first grown loss (one micro-batch a step); a run stopped after the growth
// resumes bitwise.
TEST(GrowthRun, LearnedWidthMapThenTrainingResumesBitwise) {
  const fs::path data = make_corpus("growrun_lwidth");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growrun_lwidth", 7, 4, "learn", 2);
  c.grad_acc_steps = 1;
  c.growth.source.yaml = "{n_layers: 2, ffn_dim_multiplier: 0.6}";  // FFN 64 -> 96 units
  c.growth.learn_steps = 3;
  c.growth.seed = 5;
  testing::internal::CaptureStderr();
  const TrainResult whole = train(c, TrainHooks{});
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_EQ(whole.losses.size(), 7u);
  for (double l : whole.losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(whole.losses[6], whole.losses[0]);
  const size_t at = log.find("G_learn trained its map for 3 steps (loss ");
  ASSERT_NE(at, std::string::npos) << log;
  double first = 0, last = 0;
  ASSERT_EQ(std::sscanf(log.c_str() + at, "G_learn trained its map for 3 steps (loss %lf -> %lf", &first, &last), 2);
  EXPECT_TRUE(std::isfinite(last));
  TrainConfig sp = c;
  sp.dump_dir = temp_dir("growrun_lwidth_split").string();
  sp.growth.op = "split";
  const TrainResult split = train(sp, quiet);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(whole.losses[i], split.losses[i]);
  EXPECT_NEAR(first, split.losses[4], 1e-4) << "the map starts as G_split";
  EXPECT_NE(whole.losses[4], split.losses[4]) << "another map, and later batches";
  expect_resumes_bitwise(c, whole, {5, 6}, "growrun_lwidth");
}
