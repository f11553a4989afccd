#pragma once
// STEM (SPEC §2): the FFN variant `model.ffn=stem` (stem.cpp) and what STEM's own tools need of it.
#include <string>
#include <vector>

#include "lingua/config/train_config.h"

namespace lingua {

// The optimizer group of the STEM tables (hyper-parameters optim.stem.*).
inline constexpr const char* kStemGroup = "stem";

// The STEM layers of a model config, ascending: model.stem_layers, or every layer but 0 when unset
// (empty unless model.ffn is stem). Errors name the key.
std::vector<int> stem_layers(const ModelConfig& cfg);

// The parameter name of layer l's STEM table ([vocab, hidden] f32).
std::string stem_table_name(int layer);

}  // namespace lingua
