#pragma once
// Model growth inside one training run (config growth.*, lingua/config/growth_config.h): the
// source model trains steps [0, growth.step) as a run of its own (checkpoints, resume, metrics in
// the same dump_dir), its checkpoint at growth.step is grown into model.* (lingua/model/growth.h)
// and the grown model trains steps (growth.step, steps] with a fresh optimizer (or carried moments)
// and a restarted schedule, the data loader reading on. The grown phase always starts from the
// checkpoint on disk, so an uninterrupted run and one resumed at any step (either side of the
// growth) compute the same thing, bitwise.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/exec/growth_ramp.h"

namespace lingua {

// The source model's config: model.* with growth.source's keys over it (a mapping of model keys;
// an unknown key or value fails naming growth.source).
ModelConfig growth_source_model(const TrainConfig& cfg);
// The config the source phase runs with (and its checkpoints record): cfg with the source model.
TrainConfig growth_source_config(const TrainConfig& cfg);
// Checks growth.* against the rest of the config (the operator, list and the two models), failing
// with the key that is wrong.
void check_growth_config(const TrainConfig& cfg);

// Across a wider model.dim the stream's RMS shrinks by sqrt(D_src / D), so the grown model computes
// its source's function exactly (G_zero, G_split, G_random at m = 0, G_learn's start) only with
// model.norm_eps scaled by D_src / D: that epsilon. And a note for a target whose epsilon is not
// that ("" when it is, or the dimension does not grow).
double grown_norm_eps(const ModelConfig& source, int target_dim);
// G_random's steps per ramp stage: `given` (growth.ramp_steps, lingua grow's ramp_steps), or 0 for
// optim.warmup's (at least 1).
inline int64_t ramp_steps_or_warmup(int64_t given, const OptimConfig& optim) {
  return given > 0 ? given : std::max<int64_t>(1, optim.warmup);
}
std::string norm_eps_note(const ModelConfig& source, const ModelConfig& target);

// G_random written by `lingua grow op=random`: the ramp its checkpoint needs, recorded as growth.json's
// "ramp" (lingua/exec/growth_ramp.h's RecordedRamp). A run started from that checkpoint
// (checkpoint.init_ckpt_path) ramps the new blocks and units in from its step 0, and keeps a copy
// of the record as dump_dir/growth_ramp.json, so it resumes with the same ramp if the init
// checkpoint (or the init_ckpt_path key) is gone. Every checkpoint written while a ramp runs (this
// one's or growth.op=random's in a run) keeps the record, with its start step, in its train state:
// a run continuing it elsewhere (checkpoint.continue_training_from_init) ramps on from there, and
// lingua eval and generate run it ramped at its step.
// The ramp recorded in a growth.json (or a run's growth_ramp.json) file; none when it records no
// ramp. A malformed one fails naming the file.
std::optional<RecordedRamp> read_ramp_record(const std::string& path);
// The ramp a run without growth.step trains with: its dump_dir's copy (a run resumed), else its
// init checkpoint's (continuing one written mid-ramp: its train state's; else a step directory's
// growth.json, or that of a weights file's directory); both present and different: an error
// naming both files.
std::optional<RecordedRamp> run_ramp(const TrainConfig& cfg);

}  // namespace lingua
