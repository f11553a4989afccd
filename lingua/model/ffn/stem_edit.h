#pragma once
// Knowledge editing for STEM models (SPEC §2): in a STEM layer the FFN up-projection of a position
// is the table row of its input token, so giving token A the rows of token B makes the layer treat
// A as if it were B ("capital of Spain" -> "Berlin" after swapping Spain's rows with Germany's).
// The edit works on the fp32 master weights of the model's ParamStore (a host copy of each edited
// table, written back); `lingua stem-edit` (apps/stem_edit.cpp) applies it to a checkpoint and
// writes a new one.
#include <cstdint>
#include <string>
#include <vector>

#include "lingua/model/ffn/stem.h"

namespace lingua {

class Transformer;

enum class StemEditMode {
  copy,  // the rows of `target` become those of `source` (source unchanged)
  swap,  // target and source exchange their rows
};

const char* stem_edit_mode_name(StemEditMode mode);  // "copy" | "swap"
StemEditMode parse_stem_edit_mode(const std::string& name);  // fails naming the valid modes

// Edits the STEM table rows of token `target` in `layers` (empty: every STEM layer of the model),
// from token `source`. Returns the layers edited, ascending. Everything else (other rows, other
// layers, other parameters) is left bitwise unchanged. Errors (lingua::Error, nothing edited): the
// model has no STEM layers; a listed layer is not a STEM layer (the message lists them) or is
// listed twice; an id outside [0, vocab); target == source.
std::vector<int> stem_edit_rows(Transformer& model, int32_t target, int32_t source, StemEditMode mode,
                                const std::vector<int>& layers = {});

// Inspection (the interpretability the STEM paper claims): the k tokens whose rows of STEM layer
// `layer`'s table are nearest to token `token`'s row by cosine similarity, most similar first (the
// token itself left out; ties by id). Errors as stem_edit_rows (no STEM layers, `layer` not one,
// an id outside the vocabulary, k < 1).
struct StemNeighbour {
  int32_t id;
  double cosine;
};
std::vector<StemNeighbour> stem_nearest(const Transformer& model, int layer, int32_t token, int k);
// The model's STEM layers, ascending (those with a table).
std::vector<int> stem_layers_of(const Transformer& model);



}  // namespace lingua
