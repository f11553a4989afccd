#pragma once
// The checks a whole training config goes through wherever one is used: `lingua train`, `lingua
// bench`, and every params.json a command loads (load_model). Errors name
// the key, the value and the allowed range or what to use instead. Model shapes (divisibility,
// hidden size, memory of the weights) are checked where they are resolved (model/dims.h).
#include <cstdint>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

// Throws lingua::Error on the first value out of range, non-finite, or not supported here
// (settings that need several GPUs, float8, probes, sliding-window attention, ...).
void validate_config(const TrainConfig& c);

// What only training allocates (the data loader's shuffle buffer, a step's micro-batches) against
// this machine's memory.
void check_training_memory(const TrainConfig& c);

// The keys accepted for Meta Lingua compatibility that have no effect here and that the config
// gives (most are unset by default): one line per reason, "distributed.compile has no effect:
// ..." or "env.A and env.B have no effect: ...".
std::vector<std::string> config_notes(const TrainConfig& c);

// This machine's physical memory in bytes (0 when unknown): the ceiling for allocations a config
// asks for (weights, data buffers).
uint64_t host_memory_bytes();

// "12.3 GiB"
std::string gib_text(double bytes);

}  // namespace lingua
