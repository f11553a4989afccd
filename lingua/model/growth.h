#pragma once
// Model growth (SPEC §5, PRTS): operators that build a larger model from a trained smaller one,
// on the fp32 master weights of two Transformers (host memory), by parameter name. `lingua grow`
// (apps/grow.cpp) applies one to a checkpoint and writes the target's.
//
//   G_stack (depth)  target layer i is a copy of source layer stacking_list[i] (every parameter of
//                    the layer: attention, norms, any FFN variant's, module blocks); the embedding,
//                    the final norm and the head are copied. Every target parameter comes from the
//                    source.
//   G_zero (depth)   target layer i is source layer stacking_list[i] where that is >= 0; a layer
//                    listed as -1 is new: its parameters drawn as the target config's init draws
//                    them, then its output projections (attention.wo and the FFN's w2) set to zero,
//                    so the block adds nothing to the residual stream (an identity block) and the
//                    grown model computes the source's function. FFN variants whose output
//                    projection is a product of factors are refused (a zero product needs a zero
//                    factor, and which one decides what can learn).
//   G_split (width)  the FFN hidden width grows (model.ffn_dim_multiplier or multiple_of): target
//                    unit j < H_src is source unit j, each new unit a copy of a random source unit
//                    (drawn per layer from `seed`); the FFN's input-side weights (w2's columns) of a
//                    copied unit are divided by its number of copies, so the function is kept (Net2Net).
//                    FFNs whose hidden axis is that of 2-D weights and tables (a looked-up table's
//                    columns are copied like w1's rows; LowRank's factors w1.b, w3.b and w2.a
//                    alike; a structured fc1's "2hidden" rows hold unit j twice, as the gate's row j
//                    and the up's row H + j, and a self-guided guide is a dense weight), and the
//                    block-structured BlockDense and BlockShuffle, whose units sit in blocks
//                    (UnitBlocks below): unit j of H is read by fc2's block j / (H / k) (k =
//                    model.structured.nblocks) and, BlockShuffle, written by fc1's block j % k, so
//                    source unit b (H_src / k) + r becomes target unit b (H / k) + r (not j), the new
//                    units are r >= H_src / k of each block, and G_split copies a random source unit
//                    of the same block (and residue j % k); a 3-D factor widens as the matrix it
//                    multiplies by (block_factor_dense), which such a map keeps block-diagonal.
//                    A wider model.dim places its coordinates per block the same way
//                    (model_dim_blocks: k divides both dims, k^2 for BlockShuffle, whose fc2 output
//                    interleaves them); BlockShuffle's middle units (a linear's smaller width) grow
//                    with the FFN or the dim, per block as well (k^2 divides each width that grows).
//   G_zero (width)   the same widening (block FFNs: the same places) with new units zero in every
//                    weight: the function is kept, but a unit zero on both sides gets no gradient
//                    and stays zero (as the operator is defined; G_split is the widening that learns).
//   G_random         target layer i is source layer stacking_list[i], or where that is -1 a new layer
//                    as the target config's init draws it (nothing zeroed); in width (FFN units,
//                    heads, model dimension, as G_zero places them) the new entries are the target
//                    init's. It changes the function unless what is new is ramped in, which training
//                    does (GrowthRamp, lingua/exec/growth_ramp.h: a new block outputs
//                    m f(x) + (1 - m) x; new units are masked by m; each m from 0 to 1). Every FFN
//                    variant: a factored FFN's new units are masked on the factor that reads
//                    them (LowRank's w2.a, the block variants' first fc2 factor, per block).
//   G_learn          LiGO: each target block's parameters a learned mix of the source blocks', widened
//                    by learned expansion matrices per axis (FFN units, heads, model dimension: the
//                    widenings of G_split; training runs only: lingua/exec/growth_learn.h); here, as its
//                    start, G_split (with no widening: G_stack).
//   heads (width)    G_split and G_zero also add attention heads (model.n_heads; model.head_dim set
//                    and kept; no grouped-query attention): a new head copies a random source head's
//                    q, k and v rows (wo's columns of a copied head divided by its copies), or is zero.
//   dim (G_zero)     a wider model dimension (model.head_dim set and kept): every parameter's "dim"
//                    axis gets zero new entries (embedding columns, input columns, output rows), so
//                    the residual stream's new coordinates are zero; the norms' weights are scaled by
//                    sqrt(D_src / D) (the stream's RMS shrinks by that): exact when model.norm_eps is
//                    scaled by D_src / D too, else up to the epsilon's share of the RMS. As for the
//                    FFN's zero units, the new coordinates get no gradient.
//   dim (G_split)    each new coordinate copies a random source coordinate (from `seed`), and
//                    every copy of a coordinate copied c times (the source's one too) holds 1/sqrt(c)
//                    of it: every parameter's "dim" entries are divided by sqrt(c), on the side that
//                    writes the residual stream and the side that reads the norms' outputs alike.
//                    The copies' squares sum to the source coordinate's, so the stream's RMS is
//                    sqrt(D_src / D) of the source's as with G_zero (norm weights scaled alike), and
//                    a reader's products over the copies sum to the source's: exact with
//                    model.norm_eps scaled by D_src / D. (Halving instead, Net2Net's rule, would
//                    change the RMS.)
// Layers are copied per the stacking list for every operator. The target config must equal the
// source's but for model.n_layers and, with G_zero, G_split, G_random or G_learn, the FFN width,
// n_heads and model.dim.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lingua/model/transformer.h"

namespace lingua {

enum class GrowthOperator { stack, zero, split, random, learn };
const char* growth_operator_name(GrowthOperator op);      // "stack" | "zero" | "split" | "random" | "learn"
GrowthOperator parse_growth_operator(const std::string& name);  // fails naming the operators

// A block parameter's name "layers.<i>.<rest>": i and rest; false for a parameter outside the blocks.
bool split_layer_name(const std::string& name, int* layer, std::string* rest);
// Whether `name` is a parameter of one of `model`'s blocks, as growth maps them (with its layer and
// rest): split_layer_name, except module_agg=stack's module blocks (layers.0.modules.<name>), which
// enter the module stream once below block 0 and so are the model's, like the embedding: every
// operator copies them whatever target layer 0 is.
bool growth_block_param(const Transformer& model, const std::string& name, int* layer, std::string* rest);

// G_split's choice of copies, drawn from `seed`: target unit j < n_source copies source unit j, each
// further one a random source unit. map [n_target]: the source unit of each target unit; copies
// [n_source]: how many target units copy each source unit. layer >= 0: the FFN's units (heads: the
// attention heads) of that target layer; -1: the model dimension (one choice for the whole model).
struct SplitChoice {
  std::vector<int64_t> map;
  std::vector<int> copies;
};
// Where an FFN's units sit in block-diagonal factors, which a widening keeps: unit j of H is read by
// block j / (H / blocks) of fc2's first factor (its input axis, contiguous blocks: BlockDense's
// w2.blocks, BlockShuffle's w2.blocks1) and, with stride k, written by block j % stride of fc1's
// last factor (its output axis, interleaved by P_out: BlockShuffle's w13.blocks2). Dense, LowRank
// and table FFNs: {1, 1}. With blocks or stride above 1, source unit j = b (Hs / blocks) + r is
// target unit b (Ht / blocks) + r (stride must divide Hs / blocks and Ht / blocks, so j % stride is
// kept), and the new units (r >= Hs / blocks of each block b) copy, under G_split, a random source
// unit of the same block b and residue r % stride.
struct UnitBlocks {
  int64_t blocks = 1;
  int64_t stride = 1;
};
// The unit blocks of target layer `layer`'s FFN (from its 3-D factors' shapes and axes).
UnitBlocks ffn_unit_blocks(const Transformer& model, int layer);
// Where the model dimension's coordinates sit in block factors, which growth keeps: `blocks` where
// an FFN's first factor reads dim in contiguous blocks (BlockDense, BlockShuffle), `stride` where
// BlockShuffle's last factor writes it interleaved; {1, 1} without block factors. A wider dim puts
// source coordinate b (D_src / blocks) + r at b (D / blocks) + r, the new ones at each block's end.
UnitBlocks model_dim_blocks(const Transformer& model);
// With the default `blocks`, target unit j < n_source is source unit j (the prefix).
SplitChoice split_choice(int64_t n_source, int64_t n_target, uint64_t seed, int layer, bool heads = false,
                         UnitBlocks blocks = {});
// split_choice's `layer` argument for BlockShuffle's middle units of block `layer`'s linear
// `linear` ("feed_forward.w13" or "feed_forward.w2"; each its own draw, apart from the FFN's units).
inline int middle_units_stream(int layer, const std::string& linear) {
  return (1 << 20) + 2 * layer + (linear.find("w2") != std::string::npos);
}
// G_zero's placement: map[j] the source unit of target unit j, -1 for a new (zero) unit; copies all 1.
SplitChoice zero_choice(int64_t n_source, int64_t n_target, UnitBlocks blocks = {});
// A 3-D block factor [k, m, n] as the matrix [k m, k n] it multiplies by (zero off its blocks), its
// rows and columns in unit order: block-diagonal (block b's rows b m .. b m + m - 1, columns
// b n .. b n + n - 1), or, `interleaved` (BlockShuffle's second factor, between P_mid and P_out:
// block_factor_interleaved), row a k + c and column j k + c are block c's row a and column j; and
// back to the factor (its blocks' entries of `dense`; the rest is dropped).
std::vector<float> block_factor_dense(const std::vector<float>& v, const std::vector<int64_t>& shape,
                                      bool interleaved);
std::vector<float> block_factor_blocks(const std::vector<float>& dense, const std::vector<int64_t>& shape,
                                       bool interleaved);
// Whether a block factor is BlockShuffle's second (its input axis, the middle units, read through
// P_mid; its output re-interleaved by P_out): both its axes interleave the blocks.
inline bool block_factor_interleaved(const std::vector<std::string>& axes) { return axes.size() == 3 && axes[2] == "mid"; }

// PRTS's default list: layers [0 .. L_src) repeated to fill L_target (L_target a multiple of L_src).
std::vector<int> default_stacking_list(int source_layers, int target_layers);
// The new layers of a stacking list (its -1 entries): G_zero's identity blocks, G_random's ramped ones.
inline std::vector<int> new_layers(const std::vector<int>& list) {
  std::vector<int> fresh;
  for (int i = 0; i < (int)list.size(); ++i)
    if (list[i] < 0) fresh.push_back(i);
  return fresh;
}

// Checks that `target` can grow from `source` with `op` and `list` (one entry per target layer, a
// source layer, or -1 for a new layer with G_zero); errors name the config key or list entry.
void check_growth(const ModelConfig& source, const ModelConfig& target, GrowthOperator op,
                  const std::vector<int>& list);

// Writes every parameter of `target` (built from the target config, its init already drawn) from
// `source` per the operator (a target split over processes: each its part; not G_random). Returns,
// per target layer, the source layer it copies (-1: new).
std::vector<int> grow_model(const Transformer& source, Transformer& target, GrowthOperator op,
                            const std::vector<int>& list, uint64_t seed = 0);

// AdamW moments of the grown model from the source's (growth.carry_moments): get(source
// parameter id) gives a source parameter's moments (empty vectors: it has none, i.e. frozen) and
// set(target id, ...) receives each target parameter's. They follow the weights: copied per the
// stacking list; a new layer's and a new (G_zero) unit's are zero; a G_split unit with c copies
// keeps the source's moments on the side whose weights are not divided (the gradient there is the
// source's) and divides them on the other (first moment by c, second by c^2: each copy's gradient
// is 1/c of the source unit's). Across a wider model dimension (a = sqrt(D_src / D)): G_zero's new
// entries are zero and a norm's weight, scaled by a, has its moments scaled by 1/a and 1/a^2 (its
// gradient is 1/a of the source's); under G_split (and G_learn's start) a coordinate with n copies
// has every weight's entry on it (either side) with its moments scaled by 1/sqrt(n) and 1/n (its
// gradient is 1/sqrt(n) of the source's) and a norm weight's by 1/(a n) and 1/(a n)^2. So moments
// m = g, v = g^2 of a source gradient g on a batch grow into the grown model's on that batch.
struct Moments {
  std::vector<float> m, v;
};
void grow_moments(const Transformer& source, const Transformer& target, GrowthOperator op,
                  const std::vector<int>& list, uint64_t seed, const std::function<Moments(int)>& get,
                  const std::function<void(int, const Moments&)>& set);

// The PRTS guideline for G_stack: growth factor g = 4 and the growth timing d (tokens the small
// model trains on), log10(d) = 0.88 log10(N) + 163.27 / log10(C) - 5.74, with N the target's
// parameters and C = 6 N D the compute budget for D tokens.
struct GrowthPlan {
  double N = 0, D = 0;   // target parameters, total tokens
  double C = 0;          // 6 N D
  double d = 0;          // growth timing, tokens
  int g = 4;
  int source_layers = 0, target_layers = 0;
  double source_params = 0;  // N_src (when the target config is known; else N / g)
  // The compute of the planned run against training the target on all D tokens: the first d
  // tokens cost 6 N_src d instead of 6 N d.
  double flops_saved_fraction() const { return D > 0 && N > 0 ? (N - source_params) * d / (N * D) : 0; }
};
double prts_growth_tokens(double N, double D);
GrowthPlan plan_growth(double N, double D, int target_layers = 0, double source_params = 0);

}  // namespace lingua
