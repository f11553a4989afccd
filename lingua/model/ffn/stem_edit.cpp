#include "lingua/model/ffn/stem_edit.h"

#include <algorithm>
#include <sstream>

#include "lingua/core/error.h"
#include "lingua/model/ffn/stem.h"
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

std::vector<int> stem_edit_rows(Transformer& model, int32_t target, int32_t source, StemEditMode mode,
                                const std::vector<int>& layers) {
  const ModelDims& d = model.dims();
  ParamStore& store = model.params();
  // The STEM layers: those with a table.
  std::vector<int> stem;
  for (int l = 0; l < d.n_layers; ++l)
    if (store.find(stem_table_name(l)) >= 0) stem.push_back(l);
  LINGUA_CHECK(!stem.empty(),
               "the model has no STEM layers (knowledge editing needs a model trained with model.ffn=stem)");
  const int vocab = d.vocab;
  LINGUA_CHECK(target >= 0 && target < vocab, "STEM edit: target token id ", target, " is outside the vocabulary [0, ",
               vocab, ")");
  LINGUA_CHECK(source >= 0 && source < vocab, "STEM edit: source token id ", source, " is outside the vocabulary [0, ",
               vocab, ")");
  LINGUA_CHECK(target != source, "STEM edit: target and source are the same token (id ", target,
               "): nothing to edit");
  std::vector<int> todo = layers.empty() ? stem : layers;
  std::sort(todo.begin(), todo.end());
  for (size_t i = 0; i < todo.size(); ++i) {
    LINGUA_CHECK(std::binary_search(stem.begin(), stem.end(), todo[i]), "STEM edit: layer ", todo[i],
                 " is not a STEM layer (the STEM layers are ", list_str(stem), ")");
    LINGUA_CHECK(i == 0 || todo[i - 1] != todo[i], "STEM edit: layer ", todo[i], " is listed twice");
  }
  // Every check passed: now edit (an error above leaves the model untouched).
  for (int l : todo) {
    const int p = store.index(stem_table_name(l));
    const ParamInfo& info = store.info(p);
    LINGUA_ASSERT(info.local_shape.size() == 2 && info.local_shape[0] == vocab);
    const int64_t hidden = info.local_shape[1];
    std::vector<float> table = store.host_param(p);  // a host copy of the fp32 master weights
    float* a = table.data() + (int64_t)target * hidden;
    float* b = table.data() + (int64_t)source * hidden;
    if (mode == StemEditMode::copy)
      std::copy(b, b + hidden, a);
    else
      std::swap_ranges(a, a + hidden, b);
    store.set_param(p, table.data());
  }
  return todo;
}

}  // namespace lingua
