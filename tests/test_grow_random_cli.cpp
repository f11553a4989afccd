// lingua grow op=random: G_random as a command. The grown checkpoint records its ramp (growth.json's
// "ramp": the new layers, the steps per stage, the source model), and a run started from it with
// checkpoint.init_ckpt_path ramps the new layers and units in from its step 0: the two jobs compute
// what one run growing with growth.op=random computes, bitwise, and the run resumes bitwise
// mid-ramp, also once the init checkpoint is gone (the run's own copy of the record).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/core/cuda.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/growth_test_util.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

struct TwoJobs {
  TrainConfig source;  // its run ends at the growth step
  fs::path grown;      // lingua grow's output root
  TrainConfig target;  // trains the grown checkpoint
};

// The in-run growth `c` as two jobs: the source's run to growth.step, `lingua grow op=random` with
// `grow_args` (the target's keys), and the target's run from the grown checkpoint.
TwoJobs two_jobs(const TrainConfig& c, const std::string& name, const std::string& grow_args) {
  TrainHooks quiet;
  quiet.quiet = true;
  TwoJobs j;
  j.source = c;
  j.source.growth = GrowthConfig{};
  j.source.model = growth_source_model(c);
  j.source.dump_dir = temp_dir(name + "_src").string();
  j.source.steps = c.growth.step;
  train(j.source, quiet);
  j.grown = temp_dir(name + "_grown");
  auto [rc, out] = run_cli("grow ckpt=" + j.source.dump_dir + " op=random " + grow_args +
                           " ramp_steps=" + std::to_string(c.growth.ramp_steps) + " out=" + j.grown.string());
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("checkpoint.init_ckpt_path="), std::string::npos) << out;
  j.target = c;
  j.target.growth = GrowthConfig{};
  j.target.dump_dir = temp_dir(name + "_target").string();
  j.target.steps = c.steps - c.growth.step;
  j.target.checkpoint.init_ckpt_path = j.grown.string();
  return j;
}

// The in-run growth's target (`c` without growth.*) as a config file, for lingua grow's target=.
fs::path target_yaml(const TrainConfig& c, const std::string& name) {
  TrainConfig t = c;
  t.growth = GrowthConfig{};
  const fs::path yaml = temp_dir(name + "_cfg") / "target.yaml";
  write_text_file_atomic(yaml.string(), config_to_yaml(t));
  return yaml;
}

}  // namespace

TEST(GrowCli, RandomLayersRampInAsInTheRunAndResumeBitwise) {
  const fs::path data = make_corpus("growcli_random");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growcli_random", 9, 4, "random", 1);
  c.growth.ramp_steps = 3;
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 9u);

  TwoJobs j = two_jobs(c, "growcli_random", "n_layers=4 stacking_list='[0, -1, 1, -1]'");
  const fs::path gck = j.grown / checkpoint_dir_name(0);
  const nlohmann::json rec = nlohmann::json::parse(read_text_file((gck / CheckpointFiles::growth).string()));
  EXPECT_EQ(rec["operator"], "random");
  EXPECT_EQ(rec["ramp"]["layers"], nlohmann::json({1, 3}));
  EXPECT_EQ(rec["ramp"]["steps"], 3);
  EXPECT_EQ(rec["ramp"]["source_model"]["n_layers"], 2);
  const TrainResult r = train(j.target, quiet);
  ASSERT_EQ(r.losses.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(r.losses[i], whole.losses[4 + i]) << "step " << i + 5 << " of the run";
  // Without the ramp (the record removed) the new random layers act at once: another first loss.
  const fs::path bare = temp_dir("growcli_random_bare");
  fs::copy(j.grown, bare, fs::copy_options::recursive);
  nlohmann::json no_ramp = rec;
  no_ramp.erase("ramp");
  write_text_file_atomic((bare / checkpoint_dir_name(0) / CheckpointFiles::growth).string(), no_ramp.dump());
  TrainConfig b = j.target;
  b.dump_dir = temp_dir("growcli_random_bare_run").string();
  b.checkpoint.init_ckpt_path = bare.string();
  b.steps = 1;
  EXPECT_GT(std::abs(train(b, quiet).losses.at(0) - whole.losses[4]), 1e-4);

  // Resumes bitwise mid-ramp; and after the init checkpoint is gone (the run's copy of the record).
  expect_resumes_bitwise(j.target, r, {2, 3}, "growcli_random");
  TrainConfig gone = j.target;
  gone.dump_dir = temp_dir("growcli_random_gone").string();
  const fs::path moved = temp_dir("growcli_random_moved");
  fs::copy(j.grown, moved, fs::copy_options::recursive);
  gone.checkpoint.init_ckpt_path = moved.string();
  TrainHooks stop = quiet;
  stop.after_step = [](int64_t step) { return step < 2; };
  ASSERT_EQ(train(gone, stop).final_step, 2);
  EXPECT_TRUE(fs::exists(fs::path(gone.dump_dir) / "growth_ramp.json"));
  fs::remove_all(moved);
  const TrainResult rest = train(gone, quiet);
  ASSERT_EQ(rest.start_step, 2);
  for (size_t i = 0; i < rest.losses.size(); ++i) EXPECT_EQ(rest.losses[i], r.losses[2 + i]) << "step " << 3 + i;
  // Resumed without the init_ckpt_path key: the run's copy still ramps.
  TrainConfig keyless = j.target;
  keyless.dump_dir = temp_dir("growcli_random_keyless").string();
  ASSERT_EQ(train(keyless, stop).final_step, 2);
  keyless.checkpoint.init_ckpt_path.clear();
  const TrainResult rest2 = train(keyless, quiet);
  ASSERT_EQ(rest2.start_step, 2);
  for (size_t i = 0; i < rest2.losses.size(); ++i) EXPECT_EQ(rest2.losses[i], r.losses[2 + i]) << "step " << 3 + i;
  // A copy that is not the init checkpoint's record (another run's dump_dir): refused naming both.
  TrainConfig other = j.target;
  other.dump_dir = temp_dir("growcli_random_other").string();
  nlohmann::json changed = rec;
  changed["ramp"]["steps"] = 7;
  write_text_file_atomic((fs::path(other.dump_dir) / "growth_ramp.json").string(), changed.dump());
  const std::string differs = error_of([&] { train(other, quiet); });
  EXPECT_NE(differs.find("growth_ramp.json"), std::string::npos) << differs;
  EXPECT_NE(differs.find(CheckpointFiles::growth), std::string::npos) << differs;

  // growth.step with such a checkpoint is refused naming the key; a malformed record names the file.
  TrainConfig both = j.target;
  both.dump_dir = temp_dir("growcli_random_both").string();
  both.growth = c.growth;
  both.growth.step = 2;
  EXPECT_NE(error_of([&] { train(both, quiet); }).find("growth.step"), std::string::npos);
  nlohmann::json broken = rec;
  broken["ramp"]["layers"] = "all";
  write_text_file_atomic((bare / checkpoint_dir_name(0) / CheckpointFiles::growth).string(), broken.dump());
  b.dump_dir = temp_dir("growcli_random_broken").string();
  const std::string e = error_of([&] { train(b, quiet); });
  EXPECT_NE(e.find(CheckpointFiles::growth), std::string::npos) << e;
  EXPECT_NE(e.find("ramp"), std::string::npos) << e;
}

// In width (dim 16 -> 32, heads 2 -> 4, FFN wider with it; new layers too): the two jobs equal the
// run, and at step 0 of the grown run (every m = 0) the model computes the source's function.
TEST(GrowCli, RandomWidthRampsInAsInTheRun) {
  const fs::path data = make_corpus("growcli_rwidth");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growcli_rwidth", 8, 4, "random", 2);
  grow_width_too(c);
  c.growth.ramp_steps = 1;  // depth and ffn 0-1, dim 1-2, heads 2-3 of the grown run
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 8u);
  // The target's model.* from a config file (its norm_eps scaled by 16 / 32).
  TwoJobs j = two_jobs(c, "growcli_rwidth",
                       "target=" + target_yaml(c, "growcli_rwidth").string() + " stacking_list='[0, -1, 1, -1]'");
  const nlohmann::json rec = nlohmann::json::parse(
      read_text_file((j.grown / checkpoint_dir_name(0) / CheckpointFiles::growth).string()));
  EXPECT_EQ(rec["ramp"]["source_model"]["dim"], 16);
  const TrainResult r = train(j.target, quiet);
  ASSERT_EQ(r.losses.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r.losses[i], whole.losses[4 + i]) << "step " << i + 5 << " of the run";
  // The source's run one step further: its loss is the grown model's first.
  TrainConfig more = j.source;
  more.steps = c.growth.step + 1;
  EXPECT_NEAR(train(more, quiet).losses.at(0), r.losses[0], 1e-5) << "every m = 0 at step 0";
}

// With module tokens (module_agg=stack: the module stream's entry is the model's, kept whatever
// block 0 is; here a new one), in depth and width: the two jobs equal the run, step 0 of the grown
// run is the source's function, and the grown run resumes bitwise mid-ramp.
TEST(GrowCli, RandomWithModuleTokensAsInTheRun) {
  const fs::path data = make_corpus("growcli_rmod");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growcli_rmod", 7, 3, "random", 1);
  grow_width_too(c);
  c.growth.stacking_list = std::vector<int>{-1, 0, -1, 1};
  c.growth.ramp_steps = 1;
  c.model.modules = {"code"};
  c.model.module_seq_len = 2;
  c.model.module_agg = "stack";
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 7u);
  TwoJobs j = two_jobs(c, "growcli_rmod",
                       "target=" + target_yaml(c, "growcli_rmod").string() + " stacking_list='[-1, 0, -1, 1]'");
  const TrainResult r = train(j.target, quiet);
  ASSERT_EQ(r.losses.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r.losses[i], whole.losses[3 + i]) << "step " << i + 4 << " of the run";
  TrainConfig more = j.source;
  more.steps = c.growth.step + 1;
  EXPECT_NEAR(train(more, quiet).losses.at(0), r.losses[0], 1e-5) << "every m = 0 at step 0";
  expect_resumes_bitwise(j.target, r, {2}, "growcli_rmod");
}

// On the GPU with CUDA graphs: the ramp's m's change inside the captured step; stopped mid-ramp, the
// grown run resumes bitwise.
TEST(GrowCliCuda, RandomRampResumesBitwiseWithGraphs) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const fs::path data = make_corpus("growcli_random_cuda");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, "growcli_random_cuda", 8, 4, "random", 1);
  c.device = "cuda";
  c.growth.ramp_steps = 2;
  TwoJobs j = two_jobs(c, "growcli_random_cuda", "n_layers=4 stacking_list='[0, -1, 1, -1]'");
  const TrainResult r = train(j.target, quiet);
  ASSERT_EQ(r.losses.size(), 4u);
  EXPECT_GE(r.graph_captures, 1);
  for (double l : r.losses) EXPECT_TRUE(std::isfinite(l));
  expect_resumes_bitwise(j.target, r, {1, 2}, "growcli_random_cuda");
}

// A wider model.dim by keys (lingua grow dim=): model.norm_eps is scaled by D_src / D, so the grown
// model computes the source's function exactly; a target config that keeps the source's epsilon
// gets a note naming the one to use.
TEST(GrowCli, WiderDimByKeysScalesNormEpsAndKeepsTheFunction) {
  const fs::path data = make_corpus("growcli_eps");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig s = tiny_config(data, temp_dir("growcli_eps_src"));
  s.model.dim = 16;
  s.model.n_heads = 2;
  s.model.n_kv_heads.reset();
  s.model.head_dim = 8;
  s.steps = 4;
  s.checkpoint.eval.every = 0;
  train(s, quiet);
  TrainConfig more = s;  // the source one step further
  more.dump_dir = temp_dir("growcli_eps_more").string();
  fs::copy(s.dump_dir, more.dump_dir, fs::copy_options::recursive);
  more.steps = 5;
  const double next = train(more, quiet).losses.at(0);

  const fs::path grown = temp_dir("growcli_eps_grown");
  auto [rc, out] = run_cli("grow ckpt=" + s.dump_dir + " dim=32 n_heads=4 op=zero out=" + grown.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("model.norm_eps 1e-05 -> 5e-06"), std::string::npos) << out;
  const TrainConfig saved =
      read_params_json((grown / checkpoint_dir_name(0) / CheckpointFiles::params).string());
  EXPECT_EQ(saved.model.norm_eps, 5e-6);
  TrainConfig t = s;
  t.model = saved.model;
  t.dump_dir = temp_dir("growcli_eps_target").string();
  t.checkpoint.init_ckpt_path = grown.string();
  t.steps = 1;
  EXPECT_NEAR(train(t, quiet).losses.at(0), next, 1e-6 * next) << "the source's function, exactly";
  TrainConfig off = t;  // (the same weights with the source's epsilon: not exactly)
  off.dump_dir = temp_dir("growcli_eps_off").string();
  off.model.norm_eps = 1e-5;
  EXPECT_GT(std::abs(train(off, quiet).losses.at(0) - next), 1e-6 * next);

  // A target config with the source's epsilon: grown, with a note naming the right one.
  TrainConfig unscaled = t;
  unscaled.model.norm_eps = 1e-5;
  const fs::path yaml = temp_dir("growcli_eps_cfg") / "target.yaml";
  write_text_file_atomic(yaml.string(), config_to_yaml(unscaled));
  std::tie(rc, out) = run_cli("grow ckpt=" + s.dump_dir + " target=" + yaml.string() + " op=zero out=" +
                              temp_dir("growcli_eps_grown2").string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("only with model.norm_eps = 5e-06"), std::string::npos) << out;
}
