#include "lingua/model/dims.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "lingua/config/validate.h"
#include "lingua/core/error.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/module_tokens.h"

namespace lingua {

int ffn_hidden_dim(int dim, int multiple_of, std::optional<double> mult) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  auto too_big = [&]() {
    std::ostringstream m;
    if (mult) m << *mult; else m << "null";
    fail("the FFN hidden size from model.dim (", dim, "), model.ffn_dim_multiplier (", m.str(),
         ") and model.multiple_of (", multiple_of, ") exceeds the limit of ", kMax);
  };
  int64_t hidden = (int64_t)2 * 4 * dim / 3;
  if (mult) {
    const double scaled = std::floor(*mult * (double)hidden);  // int(): the multiplier is positive
    if (!(scaled <= (double)kMax)) too_big();
    hidden = (int64_t)scaled;
  }
  const int64_t rounded = (int64_t)multiple_of * ((hidden + multiple_of - 1) / multiple_of);
  if (rounded > kMax) too_big();
  LINGUA_CHECK(rounded > 0, "the FFN hidden size from model.dim (", dim, ") and model.ffn_dim_multiplier (",
               mult.value_or(1.0), ") is 0; raise model.ffn_dim_multiplier");
  return (int)rounded;
}

namespace {

// What the model holds on the host before anything else (the weights are built there): the fp32
// weights of every dense part (a lower bound whatever the FFN variant: its two projections) and
// the RoPE table. Refused when over this machine's memory, with the keys that size it.
void check_model_fits(const ModelDims& d) {
  const uint64_t mem = host_memory_bytes();
  if (mem == 0) return;
  const double rope = (double)d.max_seqlen * d.head_dim * sizeof(float);  // cos and sin, head_dim / 2 each
  LINGUA_CHECK(rope <= (double)mem, "config key 'model.max_seqlen' (", d.max_seqlen, "): its RoPE table (max_seqlen x ",
               "head_dim ", d.head_dim, " floats) needs ", gib_text(rope), ", more than this machine's ",
               gib_text((double)mem), " of memory");
  const double attn = (double)d.dim * d.head_dim * (2.0 * d.n_heads + 2.0 * d.n_kv_heads);
  const double ffn = 2.0 * d.dim * d.hidden;
  const double params = d.n_layers * (attn + ffn + 2.0 * d.dim) + (d.weight_tying ? 1.0 : 2.0) * d.vocab * d.dim;
  const double bytes = params * sizeof(float) + rope;
  LINGUA_CHECK(bytes <= (double)mem, "the model needs at least ", gib_text(bytes), " for its fp32 weights (", params,
               " parameters from model.dim ", d.dim, ", model.n_layers ", d.n_layers, ", model.n_heads ", d.n_heads,
               ", FFN hidden size ", d.hidden, " (model.ffn_dim_multiplier, model.multiple_of), vocabulary ", d.vocab,
               ") and RoPE table, more than this machine's ", gib_text((double)mem), " of memory");
}

}  // namespace

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
  LINGUA_CHECK(c.max_seqlen.has_value(),
               "config key 'model.max_seqlen' is not set (a config read from a file or params.json takes data.seq_len)");
  LINGUA_CHECK(*c.max_seqlen > 0, "config key 'model.max_seqlen' must be positive, got ", *c.max_seqlen);
  d.max_seqlen = *c.max_seqlen;
  d.norm_eps = (float)c.norm_eps;
  d.rope_theta = c.rope_theta;
  d.weight_tying = c.weight_tying;
  check_ffn_config(c);
  check_module_config(c);
  check_model_fits(d);
  return d;
}

double init_std_factor(const std::string& mode, int layer, int n_layers, int dim) {
  if (mode == "global_depth") return std::sqrt(2.0 * (n_layers + 1));
  if (mode == "current_depth") return std::sqrt(2.0 * (layer + 1));
  if (mode == "dim_ratio") return dim / 4096.0;
  return 1.0;
}

}  // namespace lingua
