#include "lingua/model/growth.h"

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "lingua/model/dims.h"

namespace lingua {

// "layers.<i>.<rest>": i and rest; false for a parameter outside the blocks.
bool split_layer_name(const std::string& name, int* layer, std::string* rest) {
  if (name.rfind("layers.", 0) != 0) return false;
  const size_t dot = name.find('.', 7);
  if (dot == std::string::npos || dot == 7 || name.find_first_not_of("0123456789", 7) != dot) return false;
  *layer = std::stoi(name.substr(7, dot - 7));
  *rest = name.substr(dot + 1);
  return true;
}

bool growth_block_param(const Transformer& model, const std::string& name, int* layer, std::string* rest) {
  const ModuleTokens* mt = model.module_tokens();
  if (mt && !mt->has_params(1) && is_module_param(name)) return false;
  return split_layer_name(name, layer, rest);
}

namespace {

// The parameters of each layer (suffix -> shape and axis roles) and of the rest (name -> ...).
struct Shape {
  std::vector<int64_t> dims;
  std::vector<std::string> axes;
  bool operator==(const Shape& o) const { return dims == o.dims && axes == o.axes; }
};
using Params = std::map<std::string, Shape>;
struct Layout {
  std::vector<Params> layers;
  Params rest;
};
Layout layout_of(const Transformer& m) {
  Layout l;
  l.layers.resize(m.n_layers());
  const ParamStore& s = m.params();
  for (int id : s.ids()) {
    int layer;
    std::string rest;
    const Shape sh{s.info(id).shape, s.info(id).axes};
    if (growth_block_param(m, s.info(id).name, &layer, &rest)) l.layers[layer][rest] = sh;
    else l.rest[s.info(id).name] = sh;
  }
  return l;
}

std::string suffixes(const Params& m) {
  std::string s;
  for (auto& [k, v] : m) s += (s.empty() ? "" : ", ") + k + " " + shape_str(v.dims);
  return s;
}

// The axes that widen: the FFN's hidden units (one row or column each; "2hidden": fc1's 2H outputs
// of a structured FFN, the gate units then the up units) and the attention heads (head_dim rows or
// columns each; q and kv heads alike: only without GQA). Units widen 2-D parameters and the 3-D
// block factors [k, out/k, in/k] of BlockDense and BlockShuffle; heads, 2-D ones.
bool widening_axis(const std::string& role) {
  return role == "hidden" || role == "2hidden" || role == "q_heads" || role == "kv_heads";
}
bool is_heads_axis(const std::string& role) { return role == "q_heads" || role == "kv_heads"; }
bool widens_on(const std::vector<int64_t>& dims, const std::vector<std::string>& axes, size_t k) {
  if (k >= axes.size() || !widening_axis(axes[k])) return false;
  return dims.size() == 2 || (dims.size() == 3 && k > 0 && !is_heads_axis(axes[k]));
}
// The units (rows or columns of one unit each) on axis k: a 3-D factor's k blocks of dims[k] each;
// "2hidden" holds every unit twice.
int64_t axis_units(const std::vector<int64_t>& dims, const std::vector<std::string>& axes, size_t k) {
  const int64_t n = dims[k] * (dims.size() == 3 ? dims[0] : 1);
  return axes[k] == "2hidden" ? n / 2 : n;
}
// The FFN units of a layer (0: none widen-able).
int64_t ffn_units(const Params& ps) {
  for (auto& [rest, sh] : ps)
    for (size_t k = 0; k < sh.dims.size(); ++k)
      if (widens_on(sh.dims, sh.axes, k) && !is_heads_axis(sh.axes[k])) return axis_units(sh.dims, sh.axes, k);
  return 0;
}
// Where a layer's FFN units sit in its 3-D block factors (UnitBlocks, growth.h): a factor's input
// axis (2) is block-diagonal (block b reads units b n .. b n + n - 1), its output axis (1), where
// it holds units (BlockShuffle's w13.blocks2, re-interleaved by P_out), interleaved (unit a k + c
// is block c's row a).
UnitBlocks unit_blocks_of(const Params& ps) {
  UnitBlocks u;
  for (auto& [rest, sh] : ps) {
    if (sh.dims.size() != 3) continue;
    if (widens_on(sh.dims, sh.axes, 2)) u.blocks = sh.dims[0];
    if (widens_on(sh.dims, sh.axes, 1)) u.stride = sh.dims[0];
  }
  return u;
}
// A widening of the units (ns -> nt) that keeps each unit's blocks is possible: `blocks` divides
// both, and `stride` both per-block counts.
void check_unit_blocks(int64_t ns, int64_t nt, UnitBlocks b) {
  LINGUA_CHECK(nt >= ns && b.blocks >= 1 && b.stride >= 1 && ns % b.blocks == 0 && nt % b.blocks == 0 &&
                   (ns / b.blocks) % b.stride == 0 && (nt / b.blocks) % b.stride == 0,
               "the FFN's hidden units (", ns, " -> ", nt, ") sit in ", b.blocks, " blocks",
               b.stride > 1 ? " and in interleaved blocks of stride " + std::to_string(b.stride) : std::string(),
               ", which the widening must keep: config key 'model.structured.nblocks' must divide the FFN hidden "
               "width per block (model.ffn_dim_multiplier, model.multiple_of) of the source and of the target");
}

// The same parameters, and the same shapes but where `wider` allows the target's widening axes to
// be larger.
bool compatible(const Params& src, const Params& dst, bool wider, bool dim_grows) {
  if (src.size() != dst.size()) return false;
  for (auto a = src.begin(), b = dst.begin(); a != src.end(); ++a, ++b) {
    if (a->first != b->first || a->second.axes != b->second.axes || a->second.dims.size() != b->second.dims.size())
      return false;
    for (size_t k = 0; k < a->second.dims.size(); ++k) {
      const bool hidden = widens_on(a->second.dims, a->second.axes, k);
      const int64_t x = a->second.dims[k], y = b->second.dims[k];
      const bool dim = dim_grows && a->second.axes[k] == "dim";
      if (x != y && !((wider && hidden) || dim) ) return false;
      if (y < x) return false;
    }
  }
  return true;
}

// A 2-D parameter widened along its widening axis, in units of `unit` rows or columns: target unit
// j takes source unit map[j] (-1: a zero unit), the value of a unit with c copies scaled by
// `scale(c, input_side)` (input side: axis 1 of a weight [out, in]; a table's columns are its
// output side).
std::vector<float> widen(const std::vector<float>& v, const ParamInfo& src, const ParamInfo& dst, int64_t unit,
                         const std::vector<int64_t>& map, const std::vector<int>& copies,
                         const std::function<float(int, bool)>& scale) {
  const int64_t R = dst.shape[0], C = dst.shape[1], SC = src.shape[1];
  const int axis = widening_axis(dst.axes[0]) ? 0 : 1;
  const bool input_side = axis == 1 && !dst.embedding;
  std::vector<float> out((size_t)(R * C), 0.0f);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = axis == 0 ? r : c, s = map[(size_t)(i / unit)];
      if (s < 0) continue;
      const int64_t si = s * unit + i % unit;
      const float x = axis == 0 ? v[(size_t)(si * SC + c)] : v[(size_t)(r * SC + si)];
      const int n = copies[(size_t)s];
      out[(size_t)(r * C + c)] = n == 1 ? x : x * scale(n, input_side);
    }
  return out;
}

// widen() of any parameter with FFN units or heads: a "2hidden" axis holds the units twice (target
// row H_t + j takes source row H_s + map[j]); a 3-D block factor widens as its dense form (block_factor_dense;
// the map keeps every unit in its blocks, so nothing lands off them).
std::vector<float> widen_units(const std::vector<float>& v, const ParamInfo& src, const ParamInfo& dst, int64_t unit,
                               const std::vector<int64_t>& map, const std::vector<int>& copies,
                               const std::function<float(int, bool)>& scale) {
  size_t ax = 0;
  while (ax < dst.shape.size() && !widens_on(dst.shape, dst.axes, ax)) ++ax;
  LINGUA_CHECK(ax < dst.shape.size(), "growth: ", dst.name, " ", shape_str(dst.shape), " has no axis that widens");
  std::vector<int64_t> m = map;
  std::vector<int> c = copies;
  if (dst.axes[ax] == "2hidden") {
    const int64_t ns = (int64_t)copies.size();
    for (int64_t s : map) m.push_back(s < 0 ? -1 : ns + s);
    c.insert(c.end(), copies.begin(), copies.end());
  }
  if (dst.shape.size() == 2) return widen(v, src, dst, unit, m, c, scale);
  LINGUA_CHECK(dst.shape.size() == 3 && unit == 1 && dst.shape[0] == src.shape[0], "growth: ", dst.name, " ",
               shape_str(dst.shape), " cannot widen from ", shape_str(src.shape));
  ParamInfo vs = src, vd = dst;
  vs.shape = {src.shape[0] * src.shape[1], src.shape[0] * src.shape[2]};
  vd.shape = {dst.shape[0] * dst.shape[1], dst.shape[0] * dst.shape[2]};
  vs.axes = vd.axes = {dst.axes[1], dst.axes[2]};
  vs.embedding = vd.embedding = false;
  return block_factor_blocks(widen(block_factor_dense(v, src.shape, (int)ax), vs, vd, 1, m, c, scale), dst.shape,
                             (int)ax);
}

// A parameter whose "dim" axes grew (G_zero in the model dimension): the source's values in the
// leading block, zeros elsewhere; a norm's (1-D) scaled by `norm_scale`, new ones `norm_scale` when
// `weight` (the RMS of a residual stream with zero new coordinates is sqrt(D_src / D) of the
// source's), else 0 (moments).
std::vector<float> pad_dim(const std::vector<float>& v, const std::vector<int64_t>& from,
                           const std::vector<int64_t>& to, float norm_scale, bool weight) {
  if (to.size() == 1) {
    std::vector<float> out((size_t)to[0], weight ? norm_scale : 0.0f);
    for (int64_t i = 0; i < from[0]; ++i) out[(size_t)i] = v[(size_t)i] * norm_scale;
    return out;
  }
  std::vector<float> out((size_t)(to[0] * to[1]), 0.0f);
  for (int64_t r = 0; r < from[0]; ++r)
    for (int64_t c = 0; c < from[1]; ++c) out[(size_t)(r * to[1] + c)] = v[(size_t)(r * from[1] + c)];
  return out;
}

// A parameter whose "dim" axes grew by G_split: target coordinate j holds source coordinate
// map[j] scaled by factor(copies of it, norm) on every "dim" axis (weights: 1 / sqrt(c), writers and
// readers of the residual stream alike: the copies' squares sum to the source's, so the stream's
// RMS is sqrt(D_src / D) of the source's, and a reader's products over the copies sum to the
// source's); a norm's weights (1-D, norm = true) copied and scaled by factor(c, true).
std::vector<float> split_dim(const std::vector<float>& v, const std::vector<int64_t>& from, const ParamInfo& to,
                             const std::vector<int64_t>& map, const std::vector<int>& copies,
                             const std::function<float(int, bool)>& factor) {
  const std::vector<int64_t>& shape = to.shape;
  if (shape.size() == 1) {
    std::vector<float> out((size_t)shape[0]);
    for (int64_t j = 0; j < shape[0]; ++j) {
      const int64_t s = map[(size_t)j];
      out[(size_t)j] = v[(size_t)s] * factor(copies[(size_t)s], true);
    }
    return out;
  }
  const int64_t R = shape[0], C = shape[1], SC = from[1];
  const bool rows = to.axes[0] == "dim", cols = to.axes[1] == "dim";
  std::vector<float> out((size_t)(R * C));
  for (int64_t r = 0; r < R; ++r) {
    const int64_t sr = rows ? map[(size_t)r] : r;
    const float fr = rows ? factor(copies[(size_t)sr], false) : 1.0f;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t sc = cols ? map[(size_t)c] : c;
      const float fc = cols ? factor(copies[(size_t)sc], false) : 1.0f;
      out[(size_t)(r * C + c)] = v[(size_t)(sr * SC + sc)] * fr * fc;
    }
  }
  return out;
}

// The output projections of a block: zero makes it an identity block.
bool is_output_projection(const std::string& rest) {
  return rest == "attention.wo.weight" || rest == "feed_forward.w2.weight";
}

}  // namespace

const char* growth_operator_name(GrowthOperator op) {
  switch (op) {
    case GrowthOperator::stack: return "stack";
    case GrowthOperator::zero: return "zero";
    case GrowthOperator::split: return "split";
    case GrowthOperator::random: return "random";
    case GrowthOperator::learn: return "learn";
  }
  return "?";
}

GrowthOperator parse_growth_operator(const std::string& n) {
  if (n == "stack") return GrowthOperator::stack;
  if (n == "zero") return GrowthOperator::zero;
  if (n == "split") return GrowthOperator::split;
  if (n == "random") return GrowthOperator::random;
  if (n == "learn") return GrowthOperator::learn;
  fail("unknown growth operator '", n, "' (valid: stack, zero, split, random, learn)");
}

SplitChoice split_choice(int64_t n_source, int64_t n_target, uint64_t seed, int layer, bool heads,
                         UnitBlocks blocks) {
  check_unit_blocks(n_source, n_target, blocks);
  std::mt19937_64 g(layer < 0 ? seed * 0x9E3779B97F4A7C15ull + 0xd1b54a32d192ed03ull
                              : seed * 0x9E3779B97F4A7C15ull + (uint64_t)layer + (heads ? 0x5bd1e995ull : 0));
  // (One block, stride 1: the source's units, then a draw over all of them per new unit.)
  const int64_t bs = n_source / blocks.blocks, bt = n_target / blocks.blocks, st = blocks.stride;
  SplitChoice c;
  c.copies.assign((size_t)n_source, 1);
  for (int64_t j = 0; j < n_target; ++j) {
    const int64_t b = j / bt, r = j % bt;
    int64_t s = b * bs + r;
    if (r >= bs) {  // new: a random source unit of block b with the same residue r % stride
      s = b * bs + r % st + st * (int64_t)(g() % (uint64_t)(bs / st));
      ++c.copies[(size_t)s];
    }
    c.map.push_back(s);
  }
  return c;
}

SplitChoice zero_choice(int64_t n_source, int64_t n_target, UnitBlocks blocks) {
  check_unit_blocks(n_source, n_target, blocks);
  const int64_t bs = n_source / blocks.blocks, bt = n_target / blocks.blocks;
  SplitChoice c;
  c.copies.assign((size_t)n_source, 1);
  for (int64_t j = 0; j < n_target; ++j) c.map.push_back(j % bt < bs ? j / bt * bs + j % bt : -1);
  return c;
}

UnitBlocks ffn_unit_blocks(const Transformer& model, int layer) { return unit_blocks_of(layout_of(model).layers.at(layer)); }

std::vector<int> default_stacking_list(int source_layers, int target_layers) {
  LINGUA_CHECK(source_layers > 0 && target_layers % source_layers == 0, "the target's ", target_layers,
               " layers are not a multiple of the source's ", source_layers,
               ": give the stacking list (config key 'stacking_list')");
  std::vector<int> list;
  for (int i = 0; i < target_layers; ++i) list.push_back(i % source_layers);
  return list;
}

void check_growth(const ModelConfig& s, const ModelConfig& t, GrowthOperator op, const std::vector<int>& list) {
  auto same = [](const char* key, const auto& a, const auto& b) {
    LINGUA_CHECK(a == b, "config key 'model.", key, "' differs between the source and the target: growth changes ",
                 "model.n_layers (and, with G_zero, G_split, G_random or G_learn, the FFN width, the number of heads "
                 "and model.dim) only");
  };
  const bool widens = op != GrowthOperator::stack;
  if (widens && t.dim != s.dim) {  // a wider residual stream
    LINGUA_CHECK(t.dim > s.dim, "config key 'model.dim': the target's ", t.dim, " is smaller than the source's ", s.dim,
                 " (growth only adds)");
    LINGUA_CHECK(s.head_dim.has_value(), "growing model.dim (", s.dim, " -> ", t.dim, ") keeps the heads' size: set "
                 "model.head_dim (now dim / n_heads, which would change)");
  } else {
    same("dim", s.dim, t.dim);
  }
  same("head_dim", s.head_dim, t.head_dim);
  if (widens) {
    if (s.n_heads != t.n_heads) {  // more heads of the same size, each with its own k and v
      LINGUA_CHECK(t.n_heads > s.n_heads, "config key 'model.n_heads': the target's ", t.n_heads,
                   " heads are fewer than the source's ", s.n_heads, " (growth only adds)");
      LINGUA_CHECK(s.head_dim.has_value(), "growing model.n_heads (", s.n_heads, " -> ", t.n_heads, ") keeps the "
                   "heads' size: set model.head_dim (now dim / n_heads, which would change)");
      LINGUA_CHECK(s.n_kv_heads.value_or(s.n_heads) == s.n_heads && t.n_kv_heads.value_or(t.n_heads) == t.n_heads,
                   "growing model.n_heads with grouped-query attention (model.n_kv_heads): not supported (the "
                   "groups would change); only with n_kv_heads = n_heads");
    }
  } else {
    same("n_heads", s.n_heads, t.n_heads);
    same("n_kv_heads", s.n_kv_heads, t.n_kv_heads);
  }
  if (!widens) {  // (the other operators also widen the FFN: checked on the shapes)
    same("ffn_dim_multiplier", s.ffn_dim_multiplier, t.ffn_dim_multiplier);
    same("multiple_of", s.multiple_of, t.multiple_of);
  }
  same("vocab_size", s.vocab_size, t.vocab_size);
  same("weight_tying", s.weight_tying, t.weight_tying);
  same("ffn", s.ffn, t.ffn);
  // Block-structured FFNs (BlockDense, BlockShuffle, in some layer): their units widen per block.
  const bool blocks = (t.ffn == "blockdense" || t.ffn == "blockshuffle") &&
                      (t.structured.layers ? !t.structured.layers->empty() : t.n_layers > 1);
  if (widens && blocks) {
    LINGUA_CHECK(t.dim == s.dim, "config key 'model.dim': growing the model dimension (", s.dim, " -> ", t.dim,
                 ") with model.ffn=", t.ffn, ": not supported (its block-diagonal factors split dim into "
                 "model.structured.nblocks blocks); grow the FFN width, the heads or the depth");
    const int64_t Hs = ffn_hidden_dim(s.dim, s.multiple_of, s.ffn_dim_multiplier),
                  Ht = ffn_hidden_dim(t.dim, t.multiple_of, t.ffn_dim_multiplier), k = t.structured.nblocks;
    if (Ht != Hs && t.ffn == "blockshuffle") {
      LINGUA_CHECK(k > 0 && Hs % (k * k) == 0 && Ht % (k * k) == 0, "config key 'model.structured.nblocks' is ", k,
                   ": widening model.ffn=blockshuffle's FFN keeps each unit j in its two blocks (fc1's j % k, fc2's "
                   "j / (H / k)), which needs k * k = ", k * k, " to divide the source's and the target's FFN hidden "
                   "width (", Hs, " -> ", Ht, "; model.ffn_dim_multiplier, model.multiple_of)");
      LINGUA_CHECK(Hs > s.dim, "the source's FFN hidden width ", Hs, " (model.ffn_dim_multiplier, "
                   "model.multiple_of) is not above model.dim (", s.dim, "): model.ffn=blockshuffle's fc2 then has a "
                   "middle width of H / nblocks, which would grow with it; widening it is not supported");
    }
    if (Ht != Hs && t.ffn == "blockdense")
      LINGUA_CHECK(k > 0 && Hs % k == 0 && Ht % k == 0, "config key 'model.structured.nblocks' is ", k,
                   ": widening model.ffn=blockdense's FFN keeps each unit in its block of fc2 (j / (H / k)), which "
                   "needs k to divide the source's and the target's FFN hidden width (", Hs, " -> ", Ht,
                   "; model.ffn_dim_multiplier, model.multiple_of)");
  }
  same("modules", s.modules, t.modules);
  same("module_seq_len", s.module_seq_len, t.module_seq_len);
  same("module_agg", s.module_agg, t.module_agg);
  const bool new_layers = op == GrowthOperator::zero || op == GrowthOperator::random;
  LINGUA_CHECK(!new_layers || s.modules.empty() || s.module_agg == "stack", "G_", growth_operator_name(op),
               " with module tokens (model.module_agg=", s.module_agg, "): a new layer's module blocks mix into "
               "the module rows, so the grown model would not compute the source's function; use G_stack");
  LINGUA_CHECK((int)list.size() == t.n_layers, "the stacking list has ", list.size(), " entries for the target's ",
               t.n_layers, " layers (model.n_layers): one source layer per target layer");
  for (size_t i = 0; i < list.size(); ++i) {
    const int src = list[i];
    LINGUA_CHECK(src < s.n_layers && (src >= 0 || (src == -1 && new_layers)), "stacking list entry ", i, " is ", src,
                 ": a source layer in [0, ", s.n_layers, ")",
                 op == GrowthOperator::zero     ? ", or -1 for a new identity layer"
                 : op == GrowthOperator::random ? ", or -1 for a new random layer"
                                                : "");
  }
}

namespace {

// The checks of grow_model, on the two models' parameter layouts.
void check_layouts(const Transformer& source, const Transformer& target, GrowthOperator op,
                   const std::vector<int>& list) {
  LINGUA_CHECK((int)list.size() == target.n_layers(), "the stacking list has ", list.size(), " entries for ",
               target.n_layers(), " target layers");
  const Layout src = layout_of(source), dst = layout_of(target);
  const bool dim_grows = target.dims().dim != source.dims().dim;
  const bool widens = op != GrowthOperator::stack;
  LINGUA_CHECK(!dim_grows || (widens && target.dims().dim > source.dims().dim), "the model dimension differs (",
               source.dims().dim, " -> ", target.dims().dim, "): only G_zero, G_split, G_random and G_learn grow it");
  for (int i = 0; i < target.n_layers(); ++i) {
    const int s = list[i];
    if (s < 0) {
      if (op != GrowthOperator::zero) continue;  // (G_random: a new block as drawn)
      // A new identity block: its output projections must be single matrices.
      for (auto& [rest, shape] : dst.layers[i])
        LINGUA_CHECK(rest.rfind("feed_forward.w2", 0) != 0 || rest == "feed_forward.w2.weight",
                     "G_zero cannot make target layer ", i, " an identity block: its FFN's output projection is a "
                     "product of factors (", rest, "); use a dense layer there or G_stack");
      continue;
    }
    LINGUA_CHECK(s < source.n_layers(), "stacking list entry ", i, " is ", s, " but the source has ", source.n_layers(),
                 " layers");
    for (auto& [rest, shape] : dst.layers[i])
      LINGUA_CHECK(!dim_grows || shape.dims.size() != 3, "growing model.dim (", source.dims().dim, " -> ",
                   target.dims().dim, ") with block-diagonal FFN factors (target layer ", i, ": ", rest,
                   "; model.ffn=blockdense or blockshuffle): not supported (they split dim into blocks); grow the "
                   "FFN width, the heads or the depth, or keep model.dim");
    if (widens && src.layers[s].size() == dst.layers[i].size()) {
      const int64_t Hs = ffn_units(src.layers[s]), Ht = ffn_units(dst.layers[i]);
      if (Hs > 0 && Ht != Hs) check_unit_blocks(Hs, Ht, unit_blocks_of(dst.layers[i]));
    }
    LINGUA_CHECK(compatible(src.layers[s], dst.layers[i], widens, dim_grows), "target layer ", i,
                 " does not match source layer ", s,
                 " (its FFN variant, structure, width or modules differ; check which layers the FFN variant's "
                 "keys make special against the stacking list; only G_zero, G_split, G_random and G_learn widen, and "
                 "only the FFN's hidden units (of 2-D weights and of block factors) and the attention heads):\n  source: ",
                 suffixes(src.layers[s]), "\n  target: ", suffixes(dst.layers[i]));
  }
  LINGUA_CHECK(compatible(src.rest, dst.rest, false, dim_grows), "the parameters outside the blocks differ:\n  source: ", suffixes(src.rest),
               "\n  target: ", suffixes(dst.rest));
}

enum class Value { weight, first_moment, second_moment };

// Every target parameter's value of kind `what` from the source's (get: by source parameter id),
// per the operator; new parameters: `fresh(id)` (null: not set).
void map_values(const Transformer& source, const Transformer& target, GrowthOperator op, const std::vector<int>& list,
                uint64_t seed, Value what, const std::function<std::vector<float>(int)>& get,
                const std::function<void(int, const std::vector<float>&)>& set,
                const std::function<const std::vector<float>*(int, const std::string&)>& fresh) {
  const Layout src = layout_of(source), dst = layout_of(target);
  const ParamStore& from = source.params();
  const ParamStore& to = target.params();
  // Per target layer and widening (FFN units, heads): which source unit each target unit takes
  // (G_split: the source's units, then random ones of them, drawn per layer from the seed; G_zero:
  // -1, a zero unit), and how many target units copy each source unit.
  struct Units {
    std::vector<int64_t> map;
    std::vector<int> copies;
    int64_t size = 1;  // rows or columns per unit
  };
  std::map<std::pair<int, bool>, Units> units;
  const int64_t head_dim = target.dims().head_dim;
  // G_split of the model dimension: which source coordinate each target coordinate copies (the
  // source's, then random ones, drawn from the seed) and the copies of each.
  const int64_t Ds = source.dims().dim, Dt = target.dims().dim;
  // (G_learn's map starts as G_split.)
  const bool split = op == GrowthOperator::split || op == GrowthOperator::learn;
  std::vector<int64_t> dim_map;
  std::vector<int> dim_copies;
  if (split && Dt > Ds) {
    SplitChoice c = split_choice(Ds, Dt, seed, -1);
    dim_map = std::move(c.map);
    dim_copies = std::move(c.copies);
  }
  auto units_of = [&](int layer, bool heads) -> const Units& {
    Units& u = units[{layer, heads}];
    if (!u.map.empty()) return u;
    u.size = heads ? head_dim : 1;
    int64_t Hs = 0, Ht = 0;
    for (auto& [rest, sh] : dst.layers[layer]) {
      const Shape& ss = src.layers[list[layer]].at(rest);
      for (size_t k = 0; k < sh.dims.size(); ++k)
        if (widens_on(sh.dims, sh.axes, k) && is_heads_axis(sh.axes[k]) == heads)
          Hs = axis_units(ss.dims, ss.axes, k) / u.size, Ht = axis_units(sh.dims, sh.axes, k) / u.size;
    }
    // (An FFN's units keep their blocks: BlockDense, BlockShuffle.)
    const UnitBlocks b = heads ? UnitBlocks{} : unit_blocks_of(dst.layers[layer]);
    SplitChoice c = split ? split_choice(Hs, Ht, seed, layer, heads, b) : zero_choice(Hs, Ht, b);
    u.map = std::move(c.map);
    u.copies = std::move(c.copies);
    return u;
  };
  // A unit with c copies: the weights that read it are divided by c (the sum is the source's);
  // then each copy's output-side gradient is the source's / c and its input-side gradient the
  // source's, so the moments scale the other way (the second moment by c^2).
  auto scale = [what](int c, bool input_side) {
    if (what == Value::weight) return input_side ? 1.0f / (float)c : 1.0f;
    if (input_side) return 1.0f;
    return what == Value::first_moment ? 1.0f / (float)c : 1.0f / ((float)c * (float)c);
  };
  for (int id : to.ids()) {
    const ParamInfo& p = to.info(id);
    int layer;
    std::string rest, source_name = p.name;
    if (growth_block_param(target, p.name, &layer, &rest)) {
      if (list[layer] < 0) {
        if (const std::vector<float>* v = fresh(id, rest)) set(id, *v);
        continue;
      }
      source_name = "layers." + std::to_string(list[layer]) + "." + rest;
    }
    const int sid = from.index(source_name);
    const ParamInfo& sp = from.info(sid);
    std::vector<float> v = get(sid);
    if (sp.shape != p.shape && !v.empty()) {  // a widened weight (compatible() allowed it)
      // First the FFN units or heads (the "dim" axes as the source's), then the model dimension.
      std::vector<int64_t> mid = p.shape;
      for (size_t k = 0; k < mid.size(); ++k)
        if (p.axes[k] == "dim") mid[k] = sp.shape[k];
      auto place = [&](std::vector<float> x, bool weight) {
        if (mid != sp.shape) {
          ParamInfo m = p;
          m.shape = mid;
          bool heads = false;
          for (size_t k = 0; k < p.axes.size(); ++k) heads |= widens_on(p.shape, p.axes, k) && is_heads_axis(p.axes[k]);
          const Units& u = units_of(layer, heads);
          x = widen_units(x, sp, m, u.size, u.map, u.copies, scale);
        }
        if (mid != p.shape) {
          // Norm weights scaled by a = sqrt(D_src / D). A coordinate with n copies (G_split; G_zero:
          // 1, new entries 0) holds 1/sqrt(n) of the source's, and so does its gradient in the
          // stream and in any weight's entry on it; a norm weight's is 1/(a n) (input x/sqrt(n)
          // over an RMS a times the source's, output gradient 1/sqrt(n)). m scales as g, v as g^2.
          const double a = std::sqrt((double)source.dims().dim / target.dims().dim);
          auto factor = [what, a](int n, bool norm) {
            const double g = norm ? 1.0 / (a * n) : 1.0 / std::sqrt((double)n);  // the gradient's
            const double w = norm ? a : 1.0 / std::sqrt((double)n);              // the weight's
            return (float)(what == Value::weight ? w : what == Value::first_moment ? g : g * g);
          };
          x = dim_map.empty() ? pad_dim(x, mid, p.shape, factor(1, true), weight)
                              : split_dim(x, mid, p, dim_map, dim_copies, factor);
        }
        return x;
      };
      v = place(std::move(v), what == Value::weight);
      if (op == GrowthOperator::random && what == Value::weight && p.shape.size() >= 2) {
        // G_random: the new entries (where no source value lands) as the target's init drew them.
        const std::vector<float> landed = place(std::vector<float>((size_t)sp.numel, 1.0f), false);
        const std::vector<float> init = to.host_param(id);
        for (size_t i = 0; i < v.size(); ++i)
          if (landed[i] == 0.0f) v[i] = init[i];
      }
    }
    set(id, v);
  }
}

}  // namespace

std::vector<int> grow_model(const Transformer& source, Transformer& target, GrowthOperator op,
                            const std::vector<int>& list, uint64_t seed) {
  check_layouts(source, target, op, list);
  ParamStore& to = target.params();
  for (int id : to.ids())
    LINGUA_CHECK(op != GrowthOperator::random || to.info(id).placement.kind == Placement::whole,
                 "internal error: G_random grows a model split over processes");
  std::vector<float> zeros;
  map_values(
      source, target, op, list, seed, Value::weight, [&](int sid) { return source.params().host_param(sid); },
      [&](int id, const std::vector<float>& v) { to.set_param(id, to.info(id).held_part(v).data()); },
      [&](int id, const std::string& rest) -> const std::vector<float>* {
        if (op != GrowthOperator::zero || !is_output_projection(rest)) return nullptr;  // (keeps its init)
        zeros.assign((size_t)to.info(id).full_numel(), 0.0f);
        return &zeros;
      });
  to.values_written();
  return list;
}

void grow_moments(const Transformer& source, const Transformer& target, GrowthOperator op,
                  const std::vector<int>& list, uint64_t seed, const std::function<Moments(int)>& get,
                  const std::function<void(int, const Moments&)>& set) {
  check_layouts(source, target, op, list);
  std::map<int, Moments> out;
  std::map<int, Moments> in;  // (each source tensor read once)
  auto source_moments = [&](int sid) -> const Moments& {
    auto it = in.find(sid);
    return it != in.end() ? it->second : in.emplace(sid, get(sid)).first->second;
  };
  std::vector<float> zeros;
  auto fresh = [&](int id, const std::string&) -> const std::vector<float>* {
    zeros.assign((size_t)target.params().info(id).full_numel(), 0.0f);
    return &zeros;
  };
  map_values(source, target, op, list, seed, Value::first_moment, [&](int sid) { return source_moments(sid).m; },
             [&](int id, const std::vector<float>& v) { out[id].m = v; }, fresh);
  map_values(source, target, op, list, seed, Value::second_moment, [&](int sid) { return source_moments(sid).v; },
             [&](int id, const std::vector<float>& v) { out[id].v = v; }, fresh);
  for (auto& [id, mv] : out) set(id, mv);
}

}  // namespace lingua
