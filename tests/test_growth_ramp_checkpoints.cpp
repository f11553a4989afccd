// Checkpoints written while G_random's ramp runs keep it (their train state's "growth_ramp", with
// its start step; lingua/train/growth_run.h): another run continuing one (checkpoint.
// continue_training_from_init) ramps on from there, bitwise what the first run computed; lingua
// eval's and generate's model (load_model) runs it ramped at its step, as the run's validation did;
// a checkpoint after the ramp ends keeps none; a plain init from one starts whole (a note says so).
// In-run growth (growth.op=random, depth and width) and a run from lingua grow's checkpoint alike.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/eval/validation.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/growth_test_util.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// growth.op=random at step 3 (depth and width), 2 steps a stage (depth and ffn 3-5, dim 5-7,
// heads 7-9), validation and a checkpoint every step.
TrainConfig ramped_run(const fs::path& data, const std::string& name) {
  TrainConfig c = growth_run_config(data, name, 10, 3, "random", 1);
  grow_width_too(c);
  c.growth.ramp_steps = 2;
  c.checkpoint.eval.every = 1;
  return c;
}

std::string step_dir(const TrainConfig& c, int64_t step) {
  return (fs::path(c.dump_dir) / "checkpoints" / checkpoint_dir_name(step)).string();
}

// `c` in a new dump_dir, continuing its own checkpoint of `step` (checkpoint.continue_training_from_init).
TrainConfig continuing(const TrainConfig& c, int64_t step, const std::string& name) {
  TrainConfig more = c;
  more.dump_dir = temp_dir(name).string();
  more.checkpoint.init_ckpt_path = step_dir(c, step);
  more.checkpoint.continue_training_from_init = true;
  return more;
}

}  // namespace

TEST(GrowthRampCheckpoints, ContinuedElsewhereRampsOnBitwise) {
  const fs::path data = make_corpus("rampck_cont");
  TrainHooks quiet;
  quiet.quiet = true;
  const TrainConfig c = ramped_run(data, "rampck_cont");
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 10u);
  // Mid-ramp checkpoints record it (start 3, the grown phase's first step); the last one does not.
  const std::optional<RecordedRamp> r6 = checkpoint_ramp(step_dir(c, 6));
  ASSERT_TRUE(r6.has_value());
  EXPECT_EQ(r6->start, 3);
  EXPECT_EQ(r6->steps, 2);
  EXPECT_EQ(r6->layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(r6->source.dim, 16);
  EXPECT_FALSE(checkpoint_ramp(step_dir(c, 2)).has_value()) << "the source phase";
  EXPECT_FALSE(checkpoint_ramp(step_dir(c, 10)).has_value()) << "every m = 1 from step 9";
  // Another dump_dir continues step 6 (the model dimension ramping; the run's config, past its
  // growth step): the run's losses, bitwise.
  const TrainConfig more = continuing(c, 6, "rampck_cont_more");
  const TrainResult r = train(more, quiet);
  ASSERT_EQ(r.start_step, 6);
  ASSERT_EQ(r.losses.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r.losses[i], whole.losses[6 + i]) << "step " << 7 + i;
  // Stopped and resumed in its own dump_dir: the same.
  expect_resumes_bitwise(more, whole, {7}, "rampck_cont_again");
}

// load_model (lingua eval, generate) runs a mid-ramp checkpoint as the run's validation did at that
// step; the same weights whole give another loss.
TEST(GrowthRampCheckpoints, EvaluatedAsTheRunValidatedThem) {
  const fs::path data = make_corpus("rampck_eval");
  const TrainConfig c = ramped_run(data, "rampck_eval");
  train(c, {nullptr, true});
  const auto evals = read_jsonl(fs::path(c.dump_dir) / "metrics.eval.jsonl");
  for (int64_t step : {4, 6, 8, 10}) {
    SCOPED_TRACE(step);
    double logged = -1;
    for (const auto& e : evals)
      if (e["global_step"] == step) logged = e["toy/nll_per_token"].get<double>();
    ASSERT_GE(logged, 0);
    LoadedModel m = load_model(step_dir(c, step));
    EXPECT_EQ(m.ramp != nullptr, step < 9);
    const double nll = evaluate_validation(*m.exec, *m.tokenizer, m.config.data, c.eval.max_tokens).at("toy").nll_per_token();
    EXPECT_DOUBLE_EQ(nll, logged);
    if (m.ramp) {
      m.exec->remove_hooks(m.ramp.get());
      m.ramp.reset();
      EXPECT_GT(std::abs(evaluate_validation(*m.exec, *m.tokenizer, m.config.data, c.eval.max_tokens).at("toy").nll_per_token() - logged), 1e-5);
    }
  }
}

// A run from lingua grow's checkpoint (its ramp from step 0) writes mid-ramp checkpoints that a
// run elsewhere continues bitwise.
TEST(GrowthRampCheckpoints, FromLinguaGrowContinuedElsewhere) {
  const fs::path data = make_corpus("rampck_grow");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig src = tiny_config(data, temp_dir("rampck_grow_src"));
  src.model.n_layers = 2;
  src.steps = 2;
  src.checkpoint.dump.every = 2;
  src.checkpoint.eval.every = 0;
  train(src, quiet);
  const fs::path grown = temp_dir("rampck_grow_out");
  auto [rc, out] = run_cli("grow ckpt=" + src.dump_dir + " op=random n_layers=3 stacking_list='[0, -1, 1]' ramp_steps=4 "
                           "out=" + grown.string());
  ASSERT_EQ(rc, 0) << out;
  TrainConfig t = src;
  t.model.n_layers = 3;
  t.steps = 6;
  t.checkpoint.dump.every = 1;
  t.dump_dir = temp_dir("rampck_grow_t").string();
  t.checkpoint.init_ckpt_path = grown.string();
  const TrainResult whole = train(t, quiet);
  ASSERT_EQ(whole.losses.size(), 6u);
  const std::optional<RecordedRamp> r2 = checkpoint_ramp(step_dir(t, 2));
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->start, 0);
  EXPECT_FALSE(checkpoint_ramp(step_dir(t, 4)).has_value());
  const TrainConfig more = continuing(t, 2, "rampck_grow_more");
  const TrainResult r = train(more, quiet);
  ASSERT_EQ(r.start_step, 2);
  for (size_t i = 0; i < r.losses.size(); ++i) EXPECT_EQ(r.losses[i], whole.losses[2 + i]) << "step " << 3 + i;
  // Without the record (the train state's key removed) the run goes on whole: another loss.
  TrainConfig bare = more;
  bare.dump_dir = temp_dir("rampck_grow_bare").string();
  const fs::path copy = temp_dir("rampck_grow_copy") / checkpoint_dir_name(2);
  fs::copy(step_dir(t, 2), copy, fs::copy_options::recursive);
  const fs::path state = copy / CheckpointFiles::train_state(0);
  nlohmann::json st = nlohmann::json::parse(read_text_file(state.string()));
  ASSERT_TRUE(st.contains("growth_ramp"));
  st.erase("growth_ramp");
  write_text_file_atomic(state.string(), st.dump());
  bare.checkpoint.init_ckpt_path = copy.string();
  bare.steps = 3;
  EXPECT_GT(std::abs(train(bare, quiet).losses.at(0) - whole.losses[2]), 1e-4);
  // A malformed record is an error naming the file.
  st["growth_ramp"] = {{"layers", "all"}};
  write_text_file_atomic(state.string(), st.dump());
  bare.dump_dir = temp_dir("rampck_grow_broken").string();
  const std::string e = error_of([&] { train(bare, quiet); });
  EXPECT_NE(e.find(CheckpointFiles::train_state(0)), std::string::npos) << e;
  // A plain init from it starts from its weights whole, and says so.
  auto [rc2, out2] = run_cli("train config=" + (fs::path(t.dump_dir) / "config.yaml").string() + " dump_dir=" +
                             temp_dir("rampck_grow_plain").string() + " checkpoint.init_ckpt_path=" + step_dir(t, 2) +
                             " steps=1 checkpoint.init_data_state=false");
  EXPECT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("written while a G_random ramp ran"), std::string::npos) << out2;
}
