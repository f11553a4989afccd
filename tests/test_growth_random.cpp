// G_random in width with a factored FFN, in a run (growth_ramp.h): the mask of the FFN's new units
// acts on the factor that reads them (BlockShuffle's w2.blocks1 per block, LowRank's w2.a). At the
// growth the model computes the source's function (every m = 0), and a run stopped during the
// ramps resumes bitwise.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/growth_test_util.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// 2 layers (dim 32, FFN 96; layer 1 factored: model.structured.layers' default) trained 4 steps grow
// with G_random to 4 layers ([0, -1, 1, -1]) of FFN 128 (BlockShuffle: 24 -> 32 units in each of 4
// blocks), the new layers and units ramped over 2 steps each (depth and ffn 4-6), xavier factors.
void run_case(const std::string& ffn) {
  const std::string name = "growrun_rfactored_" + ffn;
  const fs::path data = make_corpus(name);
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig c = growth_run_config(data, name, 8, 4, "random", 1);
  c.model.ffn = ffn;
  c.model.structured.init = "xavier";
  if (ffn == "lowrank") c.model.structured.rank = 8;
  else c.model.structured.nblocks = 4;
  c.model.ffn_dim_multiplier = 1.5;
  c.growth.source.yaml = "{n_layers: 2, ffn_dim_multiplier: 1.0}";
  c.growth.ramp_steps = 2;
  const TrainResult whole = train(c, quiet);
  ASSERT_EQ(whole.losses.size(), 8u);
  for (double l : whole.losses) EXPECT_TRUE(std::isfinite(l));
  TrainConfig a = tiny_config(data, temp_dir(name + "_src"));
  a.model = growth_source_model(c);
  a.steps = 4;
  a.checkpoint.eval.every = 0;
  train(a, quiet);
  a.steps = 5;
  EXPECT_NEAR(train(a, quiet).losses.at(0), whole.losses[4], 1e-5) << ffn << ": every m = 0 at the growth";
  expect_resumes_bitwise(c, whole, {5}, name);
}

}  // namespace

TEST(GrowthRunRandom, FactoredFfnWidthRampsInAndResumesBitwise) {
  run_case("blockshuffle");
  run_case("lowrank");
}
