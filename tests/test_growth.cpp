// Model growth end to end (issue 16): `lingua grow` writes a grown checkpoint from a trained one
// (the source left as it was); a run started from it with checkpoint.init_ckpt_path keeps the
// source's function (G_zero: its first loss is the source model's loss on the same batch) and reads
// on from where the source's data stopped; `lingua grow plan` prints PRTS's guideline.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/train/trainer.h"
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
