#pragma once
// Learning-rate schedules (Lingua's), as a multiplier of optim.lr at optimizer step `step`
// (0-based: the number of updates already made, as PyTorch's LambdaLR sees it), over `total`
// steps. Every schedule starts with a linear warmup from 0 over optim.warmup steps.
#include <cstdint>

#include "lingua/config/train_config.h"

namespace lingua {

double lr_multiplier(const OptimConfig& cfg, int64_t step, int64_t total);

}  // namespace lingua
