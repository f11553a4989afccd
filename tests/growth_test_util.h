#pragma once
// Shared by the growth-in-a-run tests: a growing run's config, and the check that a run stopped
// anywhere resumes bitwise.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace lingua::test_e2e {

// The run `c` stopped after each step in `stops` (a crash: no checkpoint beyond the regular ones)
// and started again finishes with the losses of the uninterrupted run `whole`, bitwise.
inline void expect_resumes_bitwise(const TrainConfig& c, const TrainResult& whole, std::initializer_list<int> stops,
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
inline TrainConfig growth_run_config(const fs::path& data, const std::string& name, int64_t steps,
                                     int64_t growth_step, const std::string& op, int64_t every) {
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

// Growth in width too: the source 2 layers of dim 16 (2 heads of 8), the target dim 32 (4 heads of
// 8, no grouped-query attention), the target's model.norm_eps 16 / 32 of the source's (so at every
// m = 0, or with G_zero, the function is the source's).
inline void grow_width_too(TrainConfig& c) {
  c.model.n_kv_heads.reset();
  c.model.head_dim = 8;
  c.model.norm_eps = 1e-5f;
  c.growth.source.yaml = "{n_layers: 2, dim: 16, n_heads: 2, norm_eps: 2.0e-5}";
}

}  // namespace lingua::test_e2e
