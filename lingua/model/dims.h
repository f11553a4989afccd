#pragma once
// Resolved model dimensions (the config's defaults filled in and checked) and init scales.
#include <cstdint>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

struct ModelDims {
  int dim, n_layers, n_heads, n_kv_heads, head_dim, hidden, vocab, max_seqlen;
  float norm_eps;
  double rope_theta;
  bool weight_tying;
};

// Lingua's FFN hidden size: multiple_of * ceil(ffn_dim_multiplier * int(8 * dim / 3) / multiple_of).
int ffn_hidden_dim(int dim, int multiple_of, std::optional<double> ffn_dim_multiplier);
// Fills defaults (head_dim, n_kv_heads, vocab) and validates (divisibility, even head_dim, the FFN
// variant's own keys, ...): errors name the config key.
ModelDims resolve_dims(const ModelConfig& cfg, int tokenizer_vocab);

// std divisor of output projections for layer `layer` (init_std_factor).
double init_std_factor(const std::string& mode, int layer, int n_layers, int dim);

}  // namespace lingua
