#include "lingua/model/dims.h"

#include <algorithm>
#include <cmath>

#include "lingua/core/error.h"
#include "lingua/model/ffn/ffn.h"

namespace lingua {

int ffn_hidden_dim(int dim, int multiple_of, std::optional<double> mult) {
  int hidden = int(2 * 4 * dim / 3);
  if (mult) hidden = int(*mult * hidden);
  return multiple_of * ((hidden + multiple_of - 1) / multiple_of);
}

ModelDims resolve_dims(const ModelConfig& c, int tokenizer_vocab) {
  ModelDims d{};
  LINGUA_CHECK(c.dim > 0, "config key 'model.dim' must be positive, got ", c.dim);
  LINGUA_CHECK(c.n_layers > 0, "config key 'model.n_layers' must be positive, got ", c.n_layers);
  LINGUA_CHECK(c.n_heads > 0, "config key 'model.n_heads' must be positive, got ", c.n_heads);
  LINGUA_CHECK(c.multiple_of > 0, "config key 'model.multiple_of' must be positive, got ", c.multiple_of);
  d.dim = c.dim;
  d.n_layers = c.n_layers;
  d.n_heads = c.n_heads;
  d.n_kv_heads = c.n_kv_heads.value_or(c.n_heads);
  LINGUA_CHECK(d.n_kv_heads > 0 && d.n_heads % d.n_kv_heads == 0, "config key 'model.n_kv_heads' (", d.n_kv_heads,
               ") must divide model.n_heads (", d.n_heads, ")");
  if (c.head_dim) {
    d.head_dim = *c.head_dim;
  } else {
    LINGUA_CHECK(c.dim % c.n_heads == 0, "config key 'model.n_heads' (", c.n_heads, ") must divide model.dim (", c.dim,
                 ") unless model.head_dim is set");
    d.head_dim = c.dim / c.n_heads;
  }
  LINGUA_CHECK(d.head_dim > 0 && d.head_dim % 2 == 0, "model head_dim must be positive and even for RoPE, got ",
               d.head_dim, " (config key 'model.head_dim' or model.dim / model.n_heads)");
  d.hidden = ffn_hidden_dim(c.dim, c.multiple_of, c.ffn_dim_multiplier);
  d.vocab = c.vocab_size > 0 ? c.vocab_size : tokenizer_vocab;
  LINGUA_CHECK(d.vocab > 0, "config key 'model.vocab_size' must be positive (or -1 for the tokenizer's), got ",
               c.vocab_size);
  LINGUA_CHECK(d.vocab >= tokenizer_vocab, "config key 'model.vocab_size' (", d.vocab,
               ") is smaller than the tokenizer's vocabulary (", tokenizer_vocab, ")");
  LINGUA_CHECK(c.max_seqlen > 0, "config key 'model.max_seqlen' must be positive");
  d.max_seqlen = c.max_seqlen;
  d.norm_eps = (float)c.norm_eps;
  d.rope_theta = c.rope_theta;
  d.weight_tying = c.weight_tying;
  check_ffn_config(c);
  return d;
}

double init_std_factor(const std::string& mode, int layer, int n_layers, int dim) {
  if (mode == "global_depth") return std::sqrt(2.0 * (n_layers + 1));
  if (mode == "current_depth") return std::sqrt(2.0 * (layer + 1));
  if (mode == "dim_ratio") return dim / 4096.0;
  return 1.0;
}

}  // namespace lingua
