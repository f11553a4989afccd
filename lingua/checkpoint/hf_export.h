#pragma once
// Hugging Face Llama directories (transformers' from_pretrained / save_pretrained layout), written
// from a lingua model and read back into one. Names, RoPE row order and config.json: hf_llama.h.
//
// An exported directory holds
//   config.json              LlamaForCausalLM (a variant with an FfnHfForm: its model_type, keys
//                            and modeling file)
//   generation_config.json   BOS / EOS ids
//   model.safetensors        every weight under its HF name, float32 or bfloat16
//   tokenizer files          per data.tokenizer.name:
//     hf        tokenizer.json copied, tokenizer_config.json (PreTrainedTokenizerFast)
//     tiktoken  tokenizer.json made from the ranks: byte-level BPE, the tiktoken regex as a Split
//               pre-tokenizer, ignore_merges (whole pieces first, as tiktoken), the merges that
//               rebuild each token in rank order, the 256 special tokens, BOS prepended
//     bytes     tokenizer.json: byte-level BPE with the 256 bytes as ids 0..255 and no merges,
//               <s> = 256 (BOS), </s> = 257 (EOS)
//     sp        tokenizer.model copied, tokenizer_config.json (LlamaTokenizer)
// One difference remains by design: lingua's bytes and tiktoken tokenizers read a special token's
// name inside a document as ordinary text, transformers reads it as that special token.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/data/tokenizer.h"
#include "lingua/model/transformer.h"

namespace lingua {

// Writes the tokenizer files above into the existing directory `dir`; returns their names.
std::vector<std::string> write_hf_tokenizer_files(const TokenizerConfig& cfg, const Tokenizer& tok, bool add_bos,
                                                  int max_len, const std::string& dir);

// Writes `model` (every FFN dense SwiGLU or a variant with an FfnHfForm: merge structured FFNs
// first) with its config and
// tokenizer as an HF Llama directory `dir`, which must not exist: everything is written under
// dir + ".tmp" first and renamed at the end, so a crash never leaves a partial export. `dtype`:
// float32 (exact) or bfloat16 (rounded to nearest even). `write_extra` writes more files into the
// directory being written (its argument) before the rename.
void write_hf_llama(const Transformer& model, const TrainConfig& cfg, const Tokenizer& tok, const std::string& dir,
                    const std::string& dtype, const std::function<void(const std::string& dir)>& write_extra = nullptr);

// The model of an HF Llama directory (model.safetensors or a sharded model.safetensors.index.json;
// float32, bfloat16 or float16 weights), built on the CPU with the weights converted to float32.
// The config's tokenizer: a tokenizer.json is copied into `tokenizer_dir` (name hf; the bytes
// tokenizer's own export becomes name bytes again), else a tokenizer.model (name sp), else none
// (name bytes, with a note on stderr). Errors name the directory, the file and the tensor.
struct HfImported {
  TrainConfig config;
  std::unique_ptr<Transformer> model;
  std::vector<std::string> notes;  // what the caller should tell the user
};
HfImported read_hf_llama(const std::string& dir, const std::string& tokenizer_dir);

}  // namespace lingua
