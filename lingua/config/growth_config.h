#pragma once
// growth.*: model growth inside one training run (PRTS, SPEC §5; the run: lingua/train/growth_run.h).
// Steps [0, step) train the source model, model.* with growth.source's keys over it; at `step` the
// checkpoint of the source is grown with `op` into model.* and steps [step, steps) train that, with
// a fresh AdamW and the schedule (warmup, then decay) restarted, the data read on.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lingua/config/any_value.h"

namespace lingua {

struct GrowthConfig {
  int64_t step = 0;  // 0: no growth
  std::string op = "stack";
  AnyValue source;   // model.* keys of the source model (a mapping), e.g. {n_layers: 6}
  std::optional<std::vector<int>> stacking_list;
  int64_t seed = 0;
  bool carry_moments = false;
  int64_t ramp_steps = 0;  // op=random: 0 means optim.warmup
  int64_t learn_steps = 100;  // op=learn
  double learn_lr = 0.01;
  template <class V> void visit(V& v) {
    v("step", step, "grow the model after this optimizer step (0: no growth): steps before it train the source "
      "model (model.* with growth.source over it, its own warmup and decay over these steps), the steps after it the "
      "grown model, with a fresh optimizer and the schedule restarted, as PRTS does");
    v("source", source, "the source model: the model.* keys that differ from the target's, as a mapping, e.g. "
      "'{n_layers: 6}' (G_stack) or '{ffn_dim_multiplier: 1.0}' (op=zero, split, random or learn)");
    v.choice("op", op, {"stack", "zero", "split", "random", "learn"},
             "growth operator (as lingua grow op=): stack (G_stack), zero (G_zero: identity layers listed as -1, "
             "zero FFN units, heads and model coordinates), split (G_split: new FFN units, heads and model coordinates "
             "copy random source ones, the function kept), random (G_random: "
             "layers listed as -1, and new FFN units, model coordinates and heads, are random and ramped in over "
             "growth.ramp_steps; any FFN variant, factored ones masked on the factor that reads the units), "
             "learn (G_learn, LiGO: each "
             "target block a learned mix of the source blocks, widened by learned expansion matrices where the FFN, "
             "heads or model.dim grow; from G_split (in depth: G_stack), trained for growth.learn_steps; DDP, FSDP and "
             "HSDP, and tables split over ranks (distributed.stem_parallel_size))");
    v("stacking_list", stacking_list, "source layer of each target layer (default: the source's layers repeated; "
      "op=zero or random: -1 for a new layer)");
    v("seed", seed, "op=split (and learn, its start): the seed of the units copied");
    v("ramp_steps", ramp_steps, "op=random: the optimizer steps over which each new block's output goes from its "
      "input (m = 0) to the block's own (m = 1): it outputs m f(x) + (1 - m) x; in width, the steps of each mask "
      "stage (the FFN's new units, then the new model coordinates, then the new heads, one after the other) "
      "(0: optim.warmup's steps)");
    v("learn_steps", learn_steps, "op=learn: Adam steps on the growth map's coefficients, one batch each (read from "
      "the data after the source's, not read again), before the grown model trains");
    v("learn_lr", learn_lr, "op=learn: the learning rate of those steps");
    v("carry_moments", carry_moments, "carry AdamW's moments and step count (bias corrections) over to the grown "
      "model, mapped as the weights are and scaled as each entry's gradient is at the growth (any op, a wider "
      "model.dim included), instead of a fresh optimizer (the schedule restarts either way); DDP, FSDP, HSDP "
      "and tables split over ranks (distributed.stem_parallel_size)");
  }
};

}  // namespace lingua
