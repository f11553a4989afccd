#pragma once
// The Hugging Face Llama layout (transformers' LlamaForCausalLM) <-> lingua's parameters and
// model config: tensor names, the RoPE row order of wq/wk, and config.json.
//
//   lingua                                   Hugging Face
//   tok_embeddings.weight                    model.embed_tokens.weight
//   layers.{i}.attention.w{q,k,v,o}.weight   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
//   layers.{i}.feed_forward.w1 / w3 / w2     model.layers.{i}.mlp.gate_proj / up_proj / down_proj
//   layers.{i}.attention_norm.weight         model.layers.{i}.input_layernorm.weight
//   layers.{i}.ffn_norm.weight               model.layers.{i}.post_attention_layernorm.weight
//   norm.weight                              model.norm.weight
//   output.weight                            lm_head.weight (absent when tie_word_embeddings)
// An FFN variant without a dense SwiGLU form (one that looks rows up) brings its own form
// (FfnHfForm, lingua/model/ffn/ffn.h): its tensors' names under model.layers.{i}.mlp., its
// model_type and config.json keys, and the modeling file transformers loads it with.
//
// RoPE: lingua rotates adjacent pairs (2j, 2j+1) of each head; transformers rotates (j, j + hd/2)
// (rotate_half) with the same frequencies. The rows of wq and wk are therefore reordered per head:
// HF row j is lingua row 2j and HF row hd/2 + j is lingua row 2j + 1. Queries and keys are
// permuted alike, so every attention score is the same sum in another order.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lingua/config/train_config.h"
#include "lingua/model/dims.h"

namespace lingua {

// The HF name of a lingua parameter; fails naming it when it has none.
std::string hf_llama_name(const std::string& lingua_name);
// The lingua name of an HF tensor; "" for a tensor lingua does not keep (rotary_emb.inv_freq).
// Fails naming the tensor and `file` for a name outside the layout above.
std::string lingua_name_of_hf(const std::string& hf_name, const std::string& file);
// The heads whose rows this (lingua) parameter holds in RoPE order: n_heads for wq, n_kv_heads
// for wk, 0 for any other parameter.
int64_t rope_row_heads(const std::string& lingua_name, const ModelDims& dims);

// Reorders the rows of w [heads * head_dim, cols] in place: lingua's pair order to HF's
// (to_hf) or back. head_dim must be even.
void permute_rope_rows(float* w, int64_t heads, int64_t head_dim, int64_t cols, bool to_hf);

// config.json of an HF Llama directory for the model (torch_dtype "float32" or "bfloat16"). A
// variant with an FfnHfForm gets its model_type and keys (an auto_map to its modeling file, so
// that transformers loads it with trust_remote_code=True and never mistakes it for plain Llama).
nlohmann::json hf_llama_config(const ModelConfig& cfg, const ModelDims& dims, int bos_id, int eos_id,
                               const std::string& torch_dtype);
// A lingua ModelConfig that builds the model of an HF config.json (LlamaForCausalLM, or a
// variant's form): the FFN hidden size is matched exactly through multiple_of / ffn_dim_multiplier.
// Fails naming `path` and the key for what lingua's model does not have (rope_scaling,
// attention or MLP biases, an activation other than silu, ...).
ModelConfig model_config_from_hf(const nlohmann::json& config, const std::string& path);

}  // namespace lingua
