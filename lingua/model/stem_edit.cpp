#include "lingua/model/stem_edit.h"

#include <algorithm>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/data/tokenizer.h"  // the abstract interface only (no link dependency on lingua_data)
#include "lingua/model/transformer.h"

namespace lingua {

namespace {

std::string list_str(const std::vector<int>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

}  // namespace

const char* stem_edit_mode_name(StemEditMode mode) { return mode == StemEditMode::copy ? "copy" : "swap"; }

StemEditMode parse_stem_edit_mode(const std::string& name) {
  if (name == "copy") return StemEditMode::copy;
  if (name == "swap") return StemEditMode::swap;
  fail("unknown STEM edit mode '", name, "' (valid: copy, swap)");
}

std::string stem_table_name(int layer) {
  return "layers." + std::to_string(layer) + ".feed_forward.stem_embedding.weight";
}

std::vector<int> stem_edit_rows(Transformer& model, int32_t target, int32_t source, StemEditMode mode,
                                const std::vector<int>& layers) {
  const ModelDims& d = model.dims();
  LINGUA_CHECK(!d.stem_layers.empty(),
               "the model has no STEM layers (knowledge editing needs a model trained with model.ffn=stem)");
  const int vocab = d.vocab;
  LINGUA_CHECK(target >= 0 && target < vocab, "STEM edit: target token id ", target, " is outside the vocabulary [0, ",
               vocab, ")");
  LINGUA_CHECK(source >= 0 && source < vocab, "STEM edit: source token id ", source, " is outside the vocabulary [0, ",
               vocab, ")");
  LINGUA_CHECK(target != source, "STEM edit: target and source are the same token (id ", target,
               "): nothing to edit");
  std::vector<int> todo = layers.empty() ? d.stem_layers : layers;
  std::sort(todo.begin(), todo.end());
  for (size_t i = 0; i < todo.size(); ++i) {
    LINGUA_CHECK(d.is_stem_layer(todo[i]), "STEM edit: layer ", todo[i], " is not a STEM layer (the STEM layers are ",
                 list_str(d.stem_layers), ")");
    LINGUA_CHECK(i == 0 || todo[i - 1] != todo[i], "STEM edit: layer ", todo[i], " is listed twice");
  }
  // Every check passed: now edit (an error above leaves the model untouched).
  ParamStore& store = model.params();
  store.download();  // CUDA: device weights -> host mirror (no-op on the CPU)
  for (int l : todo) {
    const int p = store.index(stem_table_name(l));
    const ParamInfo& info = store.info(p);
    LINGUA_ASSERT(info.shape.size() == 2 && info.shape[0] == vocab);
    const int64_t hidden = info.shape[1];
    float* table = store.params() + info.offset;
    float* a = table + (int64_t)target * hidden;
    float* b = table + (int64_t)source * hidden;
    if (mode == StemEditMode::copy)
      std::copy(b, b + hidden, a);
    else
      std::swap_ranges(a, a + hidden, b);
  }
  store.upload();  // CUDA: host mirror -> device weights (no-op on the CPU)
  return todo;
}

int32_t single_token_id(const Tokenizer& tok, const std::string& text, const char* key) {
  std::vector<int32_t> ids = tok.encode(text, /*add_bos=*/false, /*add_eos=*/false);
  if (ids.size() != 1) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < ids.size(); ++i) os << (i ? ", " : "") << ids[i];
    os << "]";
    fail("config key '", key, "': \"", text, "\" is ", ids.size(), " tokens ", os.str(),
         ", not exactly one (give the text of a single token of the checkpoint's tokenizer)");
  }
  return ids[0];
}

}  // namespace lingua
