#pragma once
// How growth places a source tensor's values in a wider target tensor (lingua/model/growth.h's
// operators; internal to them): FFN units and attention heads (widen, widen_units), the model
// dimension's coordinates (place_dim), and the 3-D block factors of BlockDense and BlockShuffle
// (widen_block_factor), each along a map of target unit -> source unit (-1: new) with the copies
// of each source unit (G_split) and a scale per copy count.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lingua/model/param_store.h"

namespace lingua {

// The axes that widen: the FFN's hidden units (one row or column each; "2hidden": fc1's 2H outputs
// of a structured FFN, the gate units then the up units) and the attention heads (head_dim rows or
// columns each; q and kv heads alike: only without GQA).
inline bool is_heads_axis(const std::string& role) { return role == "q_heads" || role == "kv_heads"; }
inline bool widening_axis(const std::string& role) {
  return role == "hidden" || role == "2hidden" || is_heads_axis(role);
}

// How one axis (1 or 2) of a 3-D block factor [k, m, n] widens: target unit j takes source unit
// map[j] (-1: a new unit, zero entries), an entry on a unit with c copies scaled by scale(c). Unit
// of (block b, index i): b m + i, or i k + b where `interleaved` (BlockShuffle's second factor,
// whose inputs P_mid and outputs P_out interleave). Without a map the axis keeps its size.
struct FactorAxis {
  const std::vector<int64_t>* map = nullptr;
  const std::vector<int>* copies = nullptr;
  std::function<float(int copies)> scale;
  bool interleaved = false;
  bool late = false;  // scaled after the other axis (the model dimension: G_learn's order of stages)
};
// A block factor [k, m_s, n_s] widened to [k, m_t, n_t] along its rows' and columns' maps (which
// keep every unit in its block: an entry whose two source units sit in different blocks is zero).
std::vector<float> widen_block_factor(const std::vector<float>& v, const std::vector<int64_t>& from,
                                      const std::vector<int64_t>& to, const FactorAxis& rows, const FactorAxis& cols);

// A 2-D parameter widened along its widening axis, in units of `unit` rows or columns: target unit
// j takes source unit map[j] (-1: a zero unit), the value of a unit with c copies scaled by
// `scale(c, input_side)` (input side: axis 1 of a weight [out, in]; a table's columns are its
// output side).
std::vector<float> widen(const std::vector<float>& v, const ParamInfo& src, const ParamInfo& dst, int64_t unit,
                         const std::vector<int64_t>& map, const std::vector<int>& copies,
                         const std::function<float(int, bool)>& scale);
// The map of a "2hidden" axis, which holds the FFN's units twice (the gate's, then the up's): the
// units' map, then target unit H_t + j taking source unit H_s + map[j]; the copies likewise.
void units_twice(std::vector<int64_t>& map, std::vector<int>& copies);
// widen() of a 2-D parameter with FFN units or heads: a "2hidden" axis holds the units twice
// (target row H_t + j takes source row H_s + map[j]).
std::vector<float> widen_units(const std::vector<float>& v, const ParamInfo& src, const ParamInfo& dst, int64_t unit,
                               const std::vector<int64_t>& map, const std::vector<int>& copies,
                               const std::function<float(int, bool)>& scale);
// A parameter whose "dim" axes grew (G_zero, G_split, G_random): target coordinate j holds source
// coordinate map[j] (-1: a new one) scaled by factor(copies of it, norm) on every "dim" axis
// (weights: 1 / sqrt(c), writers and readers of the residual stream alike: the copies' squares sum
// to the source's, so the stream's RMS is sqrt(D_src / D) of the source's, and a reader's products
// over the copies sum to the source's); a norm's weights (1-D, norm = true) copied and scaled by
// factor(c, true), a new coordinate's `new_norm`. New coordinates of a 2-D parameter are zero.
// `from`: the source's shape with the target's unit axes.
std::vector<float> place_dim(const std::vector<float>& v, const std::vector<int64_t>& from, const ParamInfo& to,
                             const std::vector<int64_t>& map, const std::vector<int>& copies,
                             const std::function<float(int, bool)>& factor, float new_norm);

}  // namespace lingua
