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
#include "lingua/data/loader.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/growth_learn.h"
#include "lingua/model/growth.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/growth_test_util.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

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

// lingua grow op=learn: the target of LearnedGrowth after the same batches, read on from where the
// source's data loader stopped (every rank's), and written with the loaders advanced past them.
namespace {

// The source's checkpoint grown in process: `target` (cfg's model) after `steps` map steps, each on
// one batch of every rank's loader of `ck` (restored from its train state; their gradients summed,
// as lingua grow and a DDP run do); `loaders` end after the map's batches.
struct LearnedReference {
  LoadedModel src;
  std::unique_ptr<Transformer> target;
  std::unique_ptr<Executor> exec;
  std::unique_ptr<LearnedGrowth> learn;
  std::vector<std::unique_ptr<DataLoader>> loaders;
  std::vector<double> losses;  // each step's mean loss
  std::vector<double> start;   // the map's start (G_split)
  ModelConfig model;           // the target's

  LearnedReference(const std::string& ck, const std::function<void(ModelConfig&)>& edit, uint64_t seed, int steps,
                   double lr)
      : src(load_model(ck)) {
    edit(model = src.config.model);
    const ModelConfig& m = model;
    target = std::make_unique<Transformer>(m, resolve_dims(m, src.tokenizer->n_words()));
    exec = std::make_unique<Executor>(*target);
    learn = std::make_unique<LearnedGrowth>(*src.model, *target,
                                            default_stacking_list(src.model->n_layers(), m.n_layers), seed);
    start = learn->coefficients();
    const int ranks = checkpoint_rank_count(src.checkpoint_dir);
    for (int r = 0; r < ranks; ++r) {
      loaders.push_back(std::make_unique<DataLoader>(src.config.data, *src.tokenizer, r, ranks));
      loaders.back()->load_state(read_train_state(src.checkpoint_dir, r, ranks)->data_loader);
    }
    for (int s = 0; s < steps; ++s) {
      std::vector<double> grad;
      double loss = 0;
      for (int r = 0; r < ranks; ++r) {
        const Batch b = loaders[r]->next();
        double l = 0;
        const auto d = learn->gradient(*exec, b.input.data(), b.target.data(), b.batch_size, b.seq_len, &l, ranks);
        if (r == 0) grad = d;
        else for (size_t i = 0; i < d.size(); ++i) grad[i] += d[i];
        loss += l / ranks;
      }
      learn->apply_gradient(grad, lr);
      losses.push_back(loss);
    }
  }
  // The target's mean loss on these batches.
  double loss_on(const std::vector<Batch>& batches) {
    double nll = 0, tokens = 0;
    for (const Batch& b : batches) {
      const LossSum l = exec->forward_loss(b.input.data(), b.target.data(), b.batch_size, b.seq_len);
      nll += l.nll, tokens += (double)l.tokens;
    }
    return nll / tokens;
  }
};

std::vector<float> checkpoint_weights(const fs::path& step_dir, const LearnedReference& like) {
  Transformer m(like.model, like.target->dims());
  load_weights(m, step_dir.string());
  return m.params().host_values();
}

}  // namespace

TEST(GrowCli, LearnedMapIsLearnedGrowthsAndTheDataReadsOnAfterIt) {
  const fs::path data = make_corpus("grow_learn");
  const fs::path src = temp_dir("grow_learn_src");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig sc = tiny_config(data, src);
  sc.steps = 10;
  sc.checkpoint.eval.every = 0;
  train(sc, quiet);
  const std::string ck = (src / "checkpoints" / checkpoint_dir_name(10)).string();
  const auto files = snapshot(src);
  auto wider = [](ModelConfig& m) { m.n_layers = 4, m.ffn_dim_multiplier = 1.5; };
  const std::string keys = "grow ckpt=" + ck + " n_layers=4 ffn_dim_multiplier=1.5 seed=3 ";

  // G_learn, 2 -> 4 layers and a 1.5x wider FFN, 4 steps on the data after the source's.
  const fs::path grown = temp_dir("grow_learn_out");
  auto [rc, out] = run_cli(keys + "op=learn learn_steps=4 learn_lr=0.02 out=" + grown.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("G_learn trained its map for 4 steps on cpu"), std::string::npos) << out;
  EXPECT_EQ(snapshot(src), files) << "the source is never written to";
  LearnedReference ref(ck, wider, 3, 4, 0.02);
  const fs::path gck = grown / checkpoint_dir_name(0);
  EXPECT_TRUE(checkpoint_weights(gck, ref) == ref.target->params().host_values())
      << "the weights are LearnedGrowth's after the same 4 batches";
  const nlohmann::json rec = nlohmann::json::parse(read_text_file((gck / CheckpointFiles::growth).string()));
  EXPECT_EQ(rec["operator"], "learn");
  EXPECT_EQ(rec["learn_steps"], 4);
  EXPECT_EQ(rec["learn_lr"], 0.02);
  EXPECT_EQ(rec["learn_first_loss"].get<double>(), ref.losses.front());
  EXPECT_EQ(rec["learn_last_loss"].get<double>(), ref.losses.back());
  EXPECT_EQ(rec["learn_tokens"], 4 * sc.data.batch_size * sc.data.seq_len);
  EXPECT_EQ(rec["learn_ranks"], 1);
  EXPECT_LT(rec["learn_last_loss"].get<double>(), rec["learn_first_loss"].get<double>()) << "the map learns";
  // The written loader state is the source's advanced by exactly the map's 4 batches.
  const nlohmann::json state = nlohmann::json::parse(read_text_file((gck / CheckpointFiles::train_state(0)).string()));
  EXPECT_EQ(state["data_loader"], ref.loaders[0]->state());
  EXPECT_NE(state["data_loader"], read_train_state(ck, 0, 1)->data_loader);
  EXPECT_EQ(state["step"], 10);

  // Training from it reads the batches right after the map's: its first loss is the learned
  // target's on them; the learned map's is below its start's (G_split, the source's function).
  std::vector<Batch> next;
  for (int i = 0; i < sc.grad_acc_steps; ++i) next.push_back(ref.loaders[0]->next());
  const double learned_next = ref.loss_on(next);
  TrainConfig tc = sc;
  tc.dump_dir = temp_dir("grow_learn_target").string();
  wider(tc.model);
  tc.steps = 1;
  tc.checkpoint.init_ckpt_path = grown.string();
  EXPECT_NEAR(train(tc, quiet).losses.at(0), learned_next, 1e-5);
  ref.learn->set_coefficients(ref.start);
  EXPECT_LT(learned_next, ref.loss_on(next)) << "the learned map beats its start on the next batches";

  // learn_steps=0: the map's start, G_split, bitwise (and the data state the source's).
  const fs::path zero = temp_dir("grow_learn_zero"), split = temp_dir("grow_learn_split");
  std::tie(rc, out) = run_cli(keys + "op=learn learn_steps=0 out=" + zero.string());
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_cli(keys + "op=split out=" + split.string());
  ASSERT_EQ(rc, 0) << out;
  const auto zw = checkpoint_weights(zero / checkpoint_dir_name(0), ref);
  EXPECT_TRUE(zw == checkpoint_weights(split / checkpoint_dir_name(0), ref));
  EXPECT_EQ(nlohmann::json::parse(read_text_file((zero / checkpoint_dir_name(0) / CheckpointFiles::train_state(0)).string()))["data_loader"],
            read_train_state(ck, 0, 1)->data_loader);
  // In depth only, learn_steps=0 is G_stack.
  const fs::path dz = temp_dir("grow_learn_dzero"), ds = temp_dir("grow_learn_dstack");
  std::tie(rc, out) = run_cli("grow ckpt=" + ck + " n_layers=4 op=learn learn_steps=0 out=" + dz.string());
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_cli("grow ckpt=" + ck + " n_layers=4 op=stack out=" + ds.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(read_text_file((dz / checkpoint_dir_name(0) / CheckpointFiles::weights).string()),
            read_text_file((ds / checkpoint_dir_name(0) / CheckpointFiles::weights).string()));

  // Errors name the key.
  auto error_of = [&](const std::string& args) {
    auto [code, text] = run_cli("grow ckpt=" + ck + " n_layers=4 out=" + temp_dir("grow_learn_err").string() + " " + args);
    EXPECT_EQ(code, 1) << args << ": " << text;
    return text;
  };
  EXPECT_NE(error_of("op=learn learn_steps=-1").find("'learn_steps'"), std::string::npos);
  EXPECT_NE(error_of("op=learn learn_lr=0").find("'learn_lr'"), std::string::npos);
  EXPECT_NE(error_of("op=random stacking_list='[0, -1, 1, -1]' ramp_steps=-2").find("'ramp_steps'"), std::string::npos);
  EXPECT_NE(error_of("op=stack ramp_steps=5").find("'ramp_steps'"), std::string::npos);
  if (cuda_device_count() == 0) {
    EXPECT_NE(error_of("op=learn device=cuda").find("'device'"), std::string::npos);
  }
  // A target config without data.*: nothing to learn the map on.
  const fs::path yaml = temp_dir("grow_learn_yaml") / "target.yaml";
  {
    std::ofstream f(yaml);
    f << "model:\n  dim: 32\n  n_layers: 4\n  n_heads: 4\n  n_kv_heads: 2\n  multiple_of: 16\n  max_seqlen: 32\n";
  }
  std::tie(rc, out) = run_cli("grow ckpt=" + ck + " target=" + yaml.string() + " op=learn out=" +
                              temp_dir("grow_learn_err").string());
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("'data.root_dir'"), std::string::npos) << out;
  // (The same config with the source's data grows.)
  {
    std::ofstream f(yaml, std::ios::app);
    f << "data:\n  root_dir: " << data.string() << "\n  sources: {toy: 1.0}\n  batch_size: 2\n  seq_len: 24\n"
      << "  prefetch_size: 3\n";
  }
  std::tie(rc, out) = run_cli("grow ckpt=" + ck + " target=" + yaml.string() + " op=learn learn_steps=1 out=" +
                              temp_dir("grow_learn_yaml_out").string());
  EXPECT_EQ(rc, 0) << out;
}

// A source checkpoint of 2 ranks (each with its own data-loader state): each map step reads one
// batch of each rank's loader (their gradients summed, as a DDP run's G_learn), and both states
// are written advanced past them.
TEST(GrowCli, LearnedMapReadsEveryRanksData) {
  const fs::path data = make_corpus("grow_learn2");
  const fs::path src = temp_dir("grow_learn2_src");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig sc = tiny_config(data, src);
  sc.steps = 10;
  sc.checkpoint.eval.every = 0;
  train(sc, quiet);
  // The checkpoint as a 2-rank run would leave it: each rank's loader 3 batches into its share.
  const fs::path ck = temp_dir("grow_learn2_ck") / checkpoint_dir_name(10);
  fs::copy(src / "checkpoints" / checkpoint_dir_name(10), ck, fs::copy_options::recursive);
  const auto tok = make_tokenizer(sc.data.tokenizer);
  for (int r = 0; r < 2; ++r) {
    DataLoader l(sc.data, *tok, r, 2);
    for (int i = 0; i < 3; ++i) l.next();
    TrainState st = *read_train_state(ck.string(), 0, 1);
    st.data_loader = l.state();
    write_text_file_atomic((ck / CheckpointFiles::train_state(r)).string(), train_state_json(st));
  }
  const fs::path grown = temp_dir("grow_learn2_out");
  auto [rc, out] = run_cli("grow ckpt=" + ck.string() + " n_layers=4 op=learn learn_steps=3 learn_lr=0.02 out=" +
                           grown.string());
  ASSERT_EQ(rc, 0) << out;
  LearnedReference ref(ck.string(), [](ModelConfig& m) { m.n_layers = 4; }, 0, 3, 0.02);
  ASSERT_EQ(ref.loaders.size(), 2u);
  const fs::path gck = grown / checkpoint_dir_name(0);
  EXPECT_TRUE(checkpoint_weights(gck, ref) == ref.target->params().host_values());
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(nlohmann::json::parse(read_text_file((gck / CheckpointFiles::train_state(r)).string()))["data_loader"],
              ref.loaders[r]->state()) << "rank " << r;
  EXPECT_FALSE(fs::exists(gck / CheckpointFiles::train_state(2)));
  const nlohmann::json rec = nlohmann::json::parse(read_text_file((gck / CheckpointFiles::growth).string()));
  EXPECT_EQ(rec["learn_ranks"], 2);
  EXPECT_EQ(rec["learn_tokens"], 2 * 3 * sc.data.batch_size * sc.data.seq_len);
  EXPECT_EQ(rec["learn_last_loss"].get<double>(), ref.losses.back());
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
  grow_width_too(c);
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
