#include "lingua/model/growth.h"
#include "lingua/model/growth_widen.h"

#include <algorithm>
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

// Whether axis k widens (growth_widen.h: widening_axis): units on 2-D parameters and on the 3-D
// block factors [k, out/k, in/k] of BlockDense and BlockShuffle; heads on 2-D ones.
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
// Where the model dimension's coordinates sit in block factors, which G_zero and G_split keep: the
// input axis of an FFN's first factor splits them into contiguous blocks (BlockDense, BlockShuffle),
// the output axis of BlockShuffle's last interleaves them (coordinate a k + c is block c's row a).
UnitBlocks dim_blocks_of(const Layout& l) {
  UnitBlocks u;
  for (const Params& layer : l.layers)
    for (auto& [rest, sh] : layer) {
      if (sh.dims.size() != 3) continue;
      if (sh.axes[2] == "dim") u.blocks = std::max(u.blocks, sh.dims[0]);
      if (sh.axes[1] == "dim") u.stride = std::max(u.stride, sh.dims[0]);
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
// be larger (`dim_grows`: the "dim" axes; `mids`: BlockShuffle's middle axes).
bool compatible(const Params& src, const Params& dst, bool wider, bool dim_grows, bool mids = false) {
  if (src.size() != dst.size()) return false;
  for (auto a = src.begin(), b = dst.begin(); a != src.end(); ++a, ++b) {
    if (a->first != b->first || a->second.axes != b->second.axes || a->second.dims.size() != b->second.dims.size())
      return false;
    for (size_t k = 0; k < a->second.dims.size(); ++k) {
      const bool hidden = widens_on(a->second.dims, a->second.axes, k);
      const int64_t x = a->second.dims[k], y = b->second.dims[k];
      const bool dim = (dim_grows && a->second.axes[k] == "dim") || (mids && a->second.axes[k] == "mid");
      if (x != y && !((wider && hidden) || dim) ) return false;
      if (y < x) return false;
    }
  }
  return true;
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
UnitBlocks model_dim_blocks(const Transformer& model) { return dim_blocks_of(layout_of(model)); }

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
    const int64_t Hs = ffn_hidden_dim(s.dim, s.multiple_of, s.ffn_dim_multiplier),
                  Ht = ffn_hidden_dim(t.dim, t.multiple_of, t.ffn_dim_multiplier), k = t.structured.nblocks;
    const bool shuffle = t.ffn == "blockshuffle";
    if (t.dim != s.dim) {
      const int64_t per = shuffle ? k * k : k;
      LINGUA_CHECK(k > 0 && s.dim % per == 0 && t.dim % per == 0, "config key 'model.structured.nblocks' is ", k,
                   ": growing model.dim (", s.dim, " -> ", t.dim, ") with model.ffn=", t.ffn, " keeps each coordinate "
                   "in its block of ", shuffle ? "fc1's first factor and of fc2's last (j / (dim / k), j % k)" :
                   "fc1's first factor (j / (dim / k))", ", which needs ", per, " to divide both");
    }
    if (Ht != Hs && shuffle)
      LINGUA_CHECK(k > 0 && Hs % (k * k) == 0 && Ht % (k * k) == 0, "config key 'model.structured.nblocks' is ", k,
                   ": widening model.ffn=blockshuffle's FFN keeps each unit j in its two blocks (fc1's j % k, fc2's "
                   "j / (H / k)), which needs k * k = ", k * k, " to divide the source's and the target's FFN hidden "
                   "width (", Hs, " -> ", Ht, "; model.ffn_dim_multiplier, model.multiple_of)");
    // BlockShuffle's middle units (a linear's smaller width: fc1's min(dim, 2 H), fc2's min(H, dim))
    // keep their two blocks too.
    for (auto [ms, mt] : {std::pair{std::min<int64_t>(s.dim, 2 * Hs), std::min<int64_t>(t.dim, 2 * Ht)},
                          std::pair{std::min<int64_t>(Hs, s.dim), std::min<int64_t>(Ht, t.dim)}})
      if (shuffle && ms != mt) {
        LINGUA_CHECK(k > 0 && ms % (k * k) == 0 && mt % (k * k) == 0, "config key 'model.structured.nblocks' is ",
                     k, ": model.ffn=blockshuffle's middle width (the smaller of a linear's input and output: ", ms,
                     " -> ", mt, ") keeps each unit in its two blocks, which needs k * k = ", k * k,
                     " to divide both (model.dim, model.ffn_dim_multiplier, model.multiple_of)");
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
  // New layers under module tokens: with module_agg=stack they hold no module parameters; with sum,
  // G_zero's add zero rows; otherwise theirs would change the module rows (and the function).
  const bool adds = new_layers && std::find(list.begin(), list.end(), -1) != list.end();
  LINGUA_CHECK(!adds || s.modules.empty() || s.module_agg == "stack" ||
                   (op == GrowthOperator::zero && s.module_agg == "sum"),
               "G_", growth_operator_name(op), " with module tokens (model.module_agg=", s.module_agg, "): a new "
               "layer's module parameters mix into the module rows, so the grown model would not compute the "
               "source's function; use model.module_agg=stack (G_zero: or sum), or G_stack");
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
    if (widens && src.layers[s].size() == dst.layers[i].size()) {
      const int64_t Hs = ffn_units(src.layers[s]), Ht = ffn_units(dst.layers[i]);
      if (Hs > 0 && Ht != Hs) check_unit_blocks(Hs, Ht, unit_blocks_of(dst.layers[i]));
    }
    LINGUA_CHECK(compatible(src.layers[s], dst.layers[i], widens, dim_grows, widens), "target layer ", i,
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
  // (G_zero, G_random: the source's coordinates, then new ones; each in its blocks, dim_blocks_of.)
  std::vector<int64_t> dim_map;
  std::vector<int> dim_copies;
  if (Dt > Ds) {
    const UnitBlocks b = dim_blocks_of(dst);
    SplitChoice c = split ? split_choice(Ds, Dt, seed, -1, false, b) : zero_choice(Ds, Dt, b);
    dim_map = std::move(c.map);
    dim_copies = std::move(c.copies);
  }
  // Norm weights scaled by a = sqrt(D_src / D). A coordinate with n copies (G_split; G_zero: 1, new
  // entries 0) holds 1/sqrt(n) of the source's, and so does its gradient in the stream and in any
  // weight's entry on it; a norm weight's is 1/(a n) (input x/sqrt(n) over an RMS a times the
  // source's, output gradient 1/sqrt(n)). m scales as g, v as g^2.
  const double norm_a = std::sqrt((double)Ds / Dt);
  auto dim_factor = [what, a = norm_a](int n, bool norm) {
    const double g = norm ? 1.0 / (a * n) : 1.0 / std::sqrt((double)n);  // the gradient's
    const double w = norm ? a : 1.0 / std::sqrt((double)n);              // the weight's
    return (float)(what == Value::weight ? w : what == Value::first_moment ? g : g * g);
  };
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
  // BlockShuffle's middle units of a linear (its factors' "mid" axes, fc1's and fc2's apart): in
  // their two blocks as its FFN units are, G_split's drawn per layer and linear from the seed.
  std::map<std::pair<int, std::string>, Units> mids;
  auto mid_units_of = [&](int layer, const std::string& rest, int64_t k, int64_t ms, int64_t mt) -> const Units& {
    const std::string linear = rest.substr(0, rest.find(".blocks"));
    Units& u = mids[{layer, linear}];
    if (!u.map.empty()) return u;
    SplitChoice c = split ? split_choice(ms, mt, seed, middle_units_stream(layer, linear), false, {k, k})
                          : zero_choice(ms, mt, {k, k});
    u.map = std::move(c.map);
    u.copies = std::move(c.copies);
    return u;
  };
  // A 3-D block factor: each axis along its units' map (the FFN's units, the middle units, the
  // model dimension's coordinates) or kept; BlockShuffle's second factor (a "mid" input axis) has
  // both axes interleaved (P_mid, P_out).
  auto place_factor = [&](const std::vector<float>& x, const ParamInfo& p, const ParamInfo& sp, int layer,
                          const std::string& rest) {
    FactorAxis axes[2];
    std::vector<int64_t> maps[2];
    std::vector<int> copies[2];
    for (int k = 1; k <= 2; ++k) {
      FactorAxis& f = axes[k - 1];
      f.interleaved = block_factor_interleaved(p.axes);
      if (p.shape[k] == sp.shape[k]) continue;
      const std::string& role = p.axes[k];
      if (role == "dim") {
        f.map = &dim_map, f.copies = &dim_copies, f.late = true;
        f.scale = [&dim_factor](int c) { return dim_factor(c, false); };
        continue;
      }
      LINGUA_CHECK(role == "mid" || role == "hidden" || role == "2hidden", "growth: ", p.name, " ",
                   shape_str(p.shape), " grows on its axis '", role, "' from ", shape_str(sp.shape));
      const Units& u = role == "mid" ? mid_units_of(layer, rest, p.shape[0], sp.shape[0] * sp.shape[k],
                                                    p.shape[0] * p.shape[k])
                                     : units_of(layer, false);
      maps[k - 1] = u.map, copies[k - 1] = u.copies;
      if (role == "2hidden") units_twice(maps[k - 1], copies[k - 1]);
      f.map = &maps[k - 1], f.copies = &copies[k - 1];
      const bool input_side = k == 2;
      f.scale = [&scale, input_side](int c) { return scale(c, input_side); };
    }
    return widen_block_factor(x, sp.shape, p.shape, axes[0], axes[1]);
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
        if (p.shape.size() == 3) return place_factor(x, p, sp, layer, rest);
        if (mid != sp.shape) {
          ParamInfo m = p;
          m.shape = mid;
          bool heads = false;
          for (size_t k = 0; k < p.axes.size(); ++k) heads |= widens_on(p.shape, p.axes, k) && is_heads_axis(p.axes[k]);
          const Units& u = units_of(layer, heads);
          x = widen_units(x, sp, m, u.size, u.map, u.copies, scale);
        }
        if (mid != p.shape)
          x = place_dim(x, mid, p, dim_map, dim_copies, dim_factor, weight ? dim_factor(1, true) : 0.0f);
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
        // (G_zero: an identity block, whose module parameters add nothing: module_agg=sum.)
        if (op != GrowthOperator::zero || !(is_output_projection(rest) || rest.rfind("modules.", 0) == 0))
          return nullptr;  // (keeps its init)
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
