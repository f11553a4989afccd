#include "lingua/model/ffn/stem_edit.h"

#include <algorithm>
#include <cmath>
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

std::vector<int> stem_layers_of(const Transformer& model) {
  std::vector<int> stem;
  for (int l = 0; l < model.dims().n_layers; ++l)
    if (model.params().find(stem_table_name(l)) >= 0) stem.push_back(l);
  return stem;
}

std::vector<StemNeighbour> stem_nearest(const Transformer& model, int layer, int32_t token, int k) {
  const std::vector<int> stem = stem_layers_of(model);
  LINGUA_CHECK(!stem.empty(), "the model has no STEM layers (the inspection needs a model trained with model.ffn=stem)");
  LINGUA_CHECK(std::binary_search(stem.begin(), stem.end(), layer), "STEM inspection: layer ", layer,
               " is not a STEM layer (the STEM layers are ", list_str(stem), ")");
  const int vocab = model.dims().vocab;
  LINGUA_CHECK(token >= 0 && token < vocab, "STEM inspection: token id ", token, " is outside the vocabulary [0, ",
               vocab, ")");
  LINGUA_CHECK(k >= 1, "STEM inspection: k must be >= 1, got ", k);
  const ParamStore& store = model.params();
  const int p = store.index(stem_table_name(layer));
  const int64_t hidden = store.info(p).local_shape[1];
  const std::vector<float> table = store.host_param(p);
  std::vector<double> norm((size_t)vocab);
  for (int v = 0; v < vocab; ++v) {
    double s = 0;
    for (int64_t j = 0; j < hidden; ++j) s += (double)table[(size_t)(v * hidden + j)] * table[(size_t)(v * hidden + j)];
    norm[(size_t)v] = std::sqrt(s);
  }
  const float* t = table.data() + (int64_t)token * hidden;
  std::vector<StemNeighbour> all;
  for (int v = 0; v < vocab; ++v) {
    if (v == token) continue;
    double dot = 0;
    for (int64_t j = 0; j < hidden; ++j) dot += (double)t[j] * table[(size_t)(v * hidden + j)];
    const double den = norm[(size_t)token] * norm[(size_t)v];
    all.push_back({v, den > 0 ? dot / den : 0.0});
  }
  const size_t n = std::min<size_t>((size_t)k, all.size());
  std::partial_sort(all.begin(), all.begin() + (ptrdiff_t)n, all.end(), [](const StemNeighbour& a, const StemNeighbour& b) {
    return a.cosine != b.cosine ? a.cosine > b.cosine : a.id < b.id;
  });
  all.resize(n);
  return all;
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
