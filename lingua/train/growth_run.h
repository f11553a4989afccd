#pragma once
// Model growth inside one training run (config growth.*, lingua/config/growth_config.h): the
// source model trains steps [0, growth.step) as a run of its own (checkpoints, resume, metrics in
// the same dump_dir), its checkpoint at growth.step is grown into model.* (lingua/model/growth.h)
// and the grown model trains steps (growth.step, steps] with a fresh optimizer (or carried moments)
// and a restarted schedule, the data loader reading on. The grown phase always starts from the
// checkpoint on disk, so an uninterrupted run and one resumed at any step (either side of the
// growth) compute the same thing, bitwise.
#include "lingua/config/train_config.h"

namespace lingua {

// The source model's config: model.* with growth.source's keys over it (a mapping of model keys;
// an unknown key or value fails naming growth.source).
ModelConfig growth_source_model(const TrainConfig& cfg);
// The config the source phase runs with (and its checkpoints record): cfg with the source model.
TrainConfig growth_source_config(const TrainConfig& cfg);
// Checks growth.* against the rest of the config (the operator, list and the two models), failing
// with the key that is wrong.
void check_growth_config(const TrainConfig& cfg);

}  // namespace lingua
