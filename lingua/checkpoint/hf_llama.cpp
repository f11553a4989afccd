#include "lingua/checkpoint/hf_llama.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "lingua/core/error.h"
#include "lingua/model/ffn/ffn.h"

namespace lingua {

namespace {

// lingua suffix after "layers.{i}." -> HF suffix after "model.layers.{i}.".
const std::pair<const char*, const char*> kLayerNames[] = {
    {"attention.wq.weight", "self_attn.q_proj.weight"},
    {"attention.wk.weight", "self_attn.k_proj.weight"},
    {"attention.wv.weight", "self_attn.v_proj.weight"},
    {"attention.wo.weight", "self_attn.o_proj.weight"},
    {"feed_forward.w1.weight", "mlp.gate_proj.weight"},
    {"feed_forward.w3.weight", "mlp.up_proj.weight"},
    {"feed_forward.w2.weight", "mlp.down_proj.weight"},
    {"attention_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
};
const std::pair<const char*, const char*> kModelNames[] = {
    {"tok_embeddings.weight", "model.embed_tokens.weight"},
    {"norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// Splits "<prefix>{i}.<rest>"; false when `name` does not have that form.
bool split_layer(const std::string& name, const std::string& prefix, std::string* layer, std::string* rest) {
  static const std::regex digits("^([0-9]+)\\.(.+)$");
  if (name.rfind(prefix, 0) != 0) return false;
  std::smatch m;
  const std::string tail = name.substr(prefix.size());
  if (!std::regex_match(tail, m, digits)) return false;
  *layer = m[1];
  *rest = m[2];
  return true;
}

}  // namespace

std::string hf_llama_name(const std::string& name) {
  for (auto [ours, hf] : kModelNames)
    if (name == ours) return hf;
  std::string layer, rest;
  if (split_layer(name, "layers.", &layer, &rest)) {
    for (auto [ours, hf] : kLayerNames)
      if (rest == ours) return "model.layers." + layer + "." + hf;
    for (const FfnHfForm* form : ffn_hf_forms())
      for (const auto& [ours, hf] : form->tensors)
        if (rest == "feed_forward." + ours) return "model.layers." + layer + ".mlp." + hf;
  }
  fail("parameter '", name, "' has no Hugging Face Llama counterpart (a structured FFN is exported merged: "
       "lingua export-dense, or export-hf does it itself)");
}

std::string lingua_name_of_hf(const std::string& hf_name, const std::string& file) {
  for (auto [ours, hf] : kModelNames)
    if (hf_name == hf) return ours;
  std::string layer, rest;
  if (split_layer(hf_name, "model.layers.", &layer, &rest)) {
    if (rest == "self_attn.rotary_emb.inv_freq") return "";  // older exports keep RoPE's frequencies
    for (auto [ours, hf] : kLayerNames)
      if (rest == hf) return "layers." + layer + "." + ours;
    for (const FfnHfForm* form : ffn_hf_forms())
      for (const auto& [ours, hf] : form->tensors)
        if (rest == "mlp." + hf) return "layers." + layer + ".feed_forward." + ours;
  }
  fail(file, ": tensor '", hf_name, "' is not part of a Llama model lingua can import (expected model.embed_tokens, "
       "model.layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, "
       "model.norm, lm_head)");
}

int64_t rope_row_heads(const std::string& name, const ModelDims& d) {
  const auto ends_with = [&](const char* s) {
    const std::string t(s);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  return ends_with(".attention.wq.weight") ? d.n_heads : ends_with(".attention.wk.weight") ? d.n_kv_heads : 0;
}

void permute_rope_rows(float* w, int64_t heads, int64_t head_dim, int64_t cols, bool to_hf) {
  LINGUA_CHECK(head_dim % 2 == 0, "RoPE rows: head_dim ", head_dim, " is odd");
  const int64_t half = head_dim / 2;
  std::vector<float> head((size_t)(head_dim * cols));
  for (int64_t h = 0; h < heads; ++h) {
    float* base = w + h * head_dim * cols;
    std::copy(base, base + head_dim * cols, head.begin());
    for (int64_t j = 0; j < half; ++j)
      for (int64_t s = 0; s < 2; ++s) {
        const int64_t ours = 2 * j + s, hf = s * half + j;
        const int64_t dst = to_hf ? hf : ours, src = to_hf ? ours : hf;
        std::copy(head.begin() + src * cols, head.begin() + (src + 1) * cols, base + dst * cols);
      }
  }
}

nlohmann::json hf_llama_config(const ModelConfig& cfg, const ModelDims& d, int bos_id, int eos_id,
                               const std::string& torch_dtype) {
  nlohmann::json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", d.dim},
      {"intermediate_size", d.hidden},
      {"num_hidden_layers", d.n_layers},
      {"num_attention_heads", d.n_heads},
      {"num_key_value_heads", d.n_kv_heads},
      {"head_dim", d.head_dim},
      {"hidden_act", "silu"},
      {"rope_theta", d.rope_theta},
      {"rope_scaling", nullptr},
      {"max_position_embeddings", d.max_seqlen},
      {"vocab_size", d.vocab},
      {"tie_word_embeddings", d.weight_tying},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"initializer_range", 0.02},
      {"pretraining_tp", 1},
      {"use_cache", true},
      {"torch_dtype", torch_dtype},
      {"dtype", torch_dtype},
  };
  j["bos_token_id"] = bos_id >= 0 ? nlohmann::json(bos_id) : nlohmann::json(nullptr);
  j["eos_token_id"] = eos_id >= 0 ? nlohmann::json(eos_id) : nlohmann::json(nullptr);
  j["rms_norm_eps"] = cfg.norm_eps;  // (the config's double: d.norm_eps is a float)
  if (const FfnHfForm* form = ffn_hf_form(cfg.ffn)) {
    j["model_type"] = form->model_type;
    form->write_config(cfg, j);
  }
  return j;
}

ModelConfig model_config_from_hf(const nlohmann::json& j, const std::string& path) {
  auto need = [&](const char* key) -> const nlohmann::json& {
    LINGUA_CHECK(j.contains(key) && !j[key].is_null(), path, ": key '", key, "' is missing");
    return j[key];
  };
  auto get_int = [&](const char* key) {
    const nlohmann::json& v = need(key);
    LINGUA_CHECK(v.is_number_integer(), path, ": key '", key, "' must be an integer, got ", v.dump());
    return v.get<int>();
  };
  const std::string type = j.value("model_type", "");
  const FfnHfForm* form = ffn_hf_form_of_model_type(type);
  if (type != "llama" && !form) {
    std::string known = "llama";
    for (const FfnHfForm* f : ffn_hf_forms()) known += ", " + f->model_type;
    fail(path, ": model_type '", type, "' is not a Llama model lingua can import (model_type: ", known, ")");
  }
  auto refuse_if = [&](const char* key, bool bad, const std::string& why) {
    LINGUA_CHECK(!bad, path, ": key '", key, "' = ", j.contains(key) ? j[key].dump() : "?", ": ", why);
  };
  refuse_if("rope_scaling", j.contains("rope_scaling") && !j["rope_scaling"].is_null(),
            "RoPE scaling (Llama 3.1 style or linear/dynamic) is not implemented in lingua's model");
  refuse_if("attention_bias", j.value("attention_bias", false), "lingua's attention has no biases");
  refuse_if("mlp_bias", j.value("mlp_bias", false), "lingua's FFN has no biases");
  refuse_if("hidden_act", j.value("hidden_act", "silu") != "silu", "lingua's FFN is SwiGLU (silu)");
  refuse_if("pretraining_tp", j.value("pretraining_tp", 1) != 1, "only pretraining_tp 1 is meaningful here");

  ModelConfig c;
  c.dim = get_int("hidden_size");
  c.n_layers = get_int("num_hidden_layers");
  c.n_heads = get_int("num_attention_heads");
  c.n_kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                     ? get_int("num_key_value_heads")
                     : c.n_heads;
  if (j.contains("head_dim") && !j["head_dim"].is_null()) c.head_dim = get_int("head_dim");
  LINGUA_CHECK(c.n_heads > 0 && c.dim > 0, path, ": hidden_size and num_attention_heads must be positive");
  if (c.head_dim && *c.head_dim * c.n_heads == c.dim) c.head_dim.reset();  // the default
  c.vocab_size = get_int("vocab_size");
  c.norm_eps = j.value("rms_norm_eps", 1e-6);
  c.rope_theta = j.value("rope_theta", 10000.0);
  c.weight_tying = j.value("tie_word_embeddings", false);
  if (j.contains("max_position_embeddings")) c.max_seqlen = get_int("max_position_embeddings");

  // The FFN hidden size: lingua's rule with the default multiple_of if it gives it, else the
  // largest power-of-two multiple_of that divides it with a multiplier that lands on it.
  const int hidden = get_int("intermediate_size");
  LINGUA_CHECK(hidden > 0, path, ": intermediate_size must be positive, got ", hidden);
  bool matched = ffn_hidden_dim(c.dim, c.multiple_of, std::nullopt) == hidden;
  const int64_t base = (int64_t)2 * 4 * c.dim / 3;
  for (int mo = 1 << 12; !matched && mo >= 1; mo /= 2) {
    if (hidden % mo) continue;
    for (double target : {(double)hidden, hidden - mo + 0.5}) {
      const double mult = target / (double)base;
      if (ffn_hidden_dim(c.dim, mo, mult) == hidden) {
        c.multiple_of = mo;
        c.ffn_dim_multiplier = mult;
        matched = true;
        break;
      }
    }
  }
  LINGUA_CHECK(matched, path, ": no model.multiple_of / model.ffn_dim_multiplier gives intermediate_size ", hidden,
               " for hidden_size ", c.dim);
  if (form) form->read_config(j, path, c);
  return c;
}

}  // namespace lingua
