#include "lingua/optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "lingua/core/error.h"

namespace lingua {

double lr_multiplier(const OptimConfig& c, int64_t step, int64_t total) {
  const double mn = c.lr_min_ratio;
  if (step < c.warmup) return (double)step / (double)c.warmup;
  const std::string& s = c.scheduler;
  if (s == "constant") return 1.0;
  if (s == "inv_sqrt") return std::max(std::pow((double)c.warmup / (double)step, c.exp_factor), mn);
  if (step > total) return mn;
  double span = std::max<double>(1.0, (double)(total - c.warmup));
  double p = (double)(step - c.warmup) / span;  // progress after warmup, 0..1
  if (s == "linear") return p * mn + (1 - p);
  if (s == "cosine") {
    // The cosine flips sign on odd cycles so that cycles continue smoothly (Lingua). The cycle is
    // counted on the post-warmup progress, so the last step still ends at lr_min_ratio (Lingua's
    // raw step count flips the sign at step == steps and jumps back to 1 there).
    int64_t cycle = (int64_t)std::floor(std::min(p, 1.0 - 1e-12) / c.cycle_length);
    double sign = (cycle & 1) ? -1.0 : 1.0;
    return mn + 0.5 * (1 - mn) * (sign * std::cos(M_PI * std::pow(p, c.cosine_theta) / c.cycle_length) + 1);
  }
  if (s == "wsd") {
    // Stable at 1, then over the last decay_fraction of the steps 1 / (q / mn + (1 - q)), q the
    // decay progress 0..1, which ends exactly at mn. (Lingua divides by the total step count
    // instead of the decay length, so its decay stops short of mn; we follow the stated schedule.)
    int64_t decay = (int64_t)(total * c.decay_fraction);
    int64_t start = total - decay;
    if (step <= start || decay <= 0) return 1.0;
    double q = (double)(step - start) / (double)decay;
    return 1.0 / (q / mn + (1 - q));
  }
  fail("config key 'optim.scheduler': unknown schedule '", s, "'");
}

}  // namespace lingua
