// PRTS's growth guideline (growth.h: prts_growth_tokens, plan_growth), used by `lingua grow plan`.
#include <cmath>

#include "lingua/model/growth.h"

namespace lingua {

double prts_growth_tokens(double N, double D) {
  LINGUA_CHECK(N > 0 && D > 0, "the growth planner needs the target's parameters and tokens (> 0)");
  const double C = 6.0 * N * D;
  return std::pow(10.0, 0.88 * std::log10(N) + 163.27 / std::log10(C) - 5.74);
}

GrowthPlan plan_growth(double N, double D, int target_layers, double source_params) {
  GrowthPlan p;
  p.N = N;
  p.D = D;
  p.C = 6.0 * N * D;
  p.d = prts_growth_tokens(N, D);
  p.target_layers = target_layers;
  p.source_layers = target_layers / p.g;
  p.source_params = source_params > 0 ? source_params : N / p.g;
  return p;
}

}  // namespace lingua
