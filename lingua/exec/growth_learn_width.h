#pragma once
// G_learn in width (LiGO's width expansion; the depth mix and the training: growth_learn.h). Every
// target parameter is W_t = E_out X E_in^T (a 1-D one: E x), X its source-sized value (a block's:
// the depth mix of the source blocks), with one learned matrix E [n_target, n_source] per axis that
// grows (an axis that keeps its size: the identity):
//   FFN units ("hidden")          per target layer: one for the side that writes the units (w1's and
//                                 w3's rows; a table's columns; a structured fc1's "2hidden" rows, the
//                                 gate and the up units each by the same matrix), one for the side
//                                 that reads them (w2's columns): their starts differ. A 3-D block
//                                 factor (BlockDense, BlockShuffle) is expanded as the matrix it
//                                 multiplies by (zero off its blocks, units in unit order) and then
//                                 cut back to its blocks; the start keeps every unit in its blocks
//                                 (split_choice with ffn_unit_blocks), so nothing is cut there;
//   middle units ("mid")          BlockShuffle's, per target layer and linear, one per side (the
//                                 first factor's rows, the second's columns), in their two blocks;
//   heads ("q_heads", "kv_heads") per target layer, role and side, [H_t, H_s], applied per head
//                                 (kron with the identity over head_dim);
//   model dimension ("dim")       one per side for the whole model (the residual stream is one):
//                                 writers (output rows, the embedding's columns; a block factor's
//                                 output axis), readers (input columns, the head's; a block
//                                 factor's input axis) and the norms' weights (1-D); its start keeps
//                                 the coordinates in their blocks (model_dim_blocks).
// The start is G_split's (split_choice, growth.h): E[j][map[j]] = 1, divided by the copies c on the
// reading side of units and heads, by sqrt(c) on both sides of the model dimension, and
// sqrt(D_s / D_t) for the norms. The products are fp32 with one nonzero term each at the start, in
// G_split's order (units or heads, then the model dimension), so they equal grow_model's bitwise.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lingua/model/transformer.h"

namespace lingua {

class WidthExpansion {
 public:
  // list: the source layer each target layer starts from (its shapes); seed: G_split's choice.
  WidthExpansion(const Transformer& source, const Transformer& target, const std::vector<int>& list, uint64_t seed);

  struct Matrix {
    std::string name;    // "layers.<l>.<role>.<side>" or "dim.<side>"; side: out, in, norm
    int64_t rows = 0;    // n_target (heads: H_t)
    int64_t cols = 0;    // n_source
    int64_t unit = 1;    // a weight's rows or columns per entry (head_dim for heads)
    size_t offset = 0;   // of its entries (row-major) in the coefficients
  };
  const std::vector<Matrix>& matrices() const { return matrices_; }
  size_t size() const { return start_.size(); }            // every matrix's entries
  const std::vector<double>& start() const { return start_; }  // G_split's
  bool empty() const { return matrices_.empty(); }          // nothing widens
  bool expands(int id) const { return plans_.count(id) != 0; }  // target parameter id has a matrix

  // Takes the coefficients (size(); kept as fp32 matrices) that apply and backward use.
  void load(const double* coef);
  // W_t of target parameter `id` from x (its source-sized value, row-major).
  std::vector<float> apply(int id, const std::vector<float>& x) const;
  // Given g = dL/dW_t of W_t = apply(id, x): adds dL/dcoef into `dcoef` (size()), returns dL/dx.
  std::vector<float> backward(int id, const std::vector<float>& x, const float* g, double* dcoef) const;

 private:
  struct Stage {
    int axis;    // of a [rows, cols] view (1-D: [n, 1])
    int matrix;
    int halves = 1;  // 2: a "2hidden" axis (rows), the matrix applied to each half
  };
  struct Plan {
    int64_t rows, cols;  // the source-sized view
    std::vector<Stage> stages;
    bool block = false;        // a 3-D block factor: the view is its dense form (block_factor_dense)
    bool interleaved = false;  // (BlockShuffle's second factor: block_factor_interleaved)
    std::vector<int64_t> source_shape, target_shape;  // (of a block factor)
  };
  // The stages' inputs: the tensor before each stage and its view's [rows, cols].
  std::vector<std::vector<float>> forward(const Plan& plan, const std::vector<float>& x,
                                          std::vector<std::pair<int64_t, int64_t>>* views) const;
  std::vector<Matrix> matrices_;
  std::vector<double> start_;
  std::vector<std::vector<float>> dense_;  // per matrix: [rows * unit, cols * unit]
  std::map<int, Plan> plans_;              // by target parameter id
};

}  // namespace lingua
