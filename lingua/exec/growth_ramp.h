#pragma once
// G_random's ramp (SPEC §5): what a growth with random new parameters added enters the model
// gradually, so the grown model starts at its source's function. A hook on the executor (hooks.h):
//
// Depth. Each ramped (new) block l outputs
//   y' = m f(x) + (1 - m) x           (f: the block, x its input)
// and back-propagates through it (the block's output gradient m dy', its input's (1 - m) dy' plus
// the block's). m = min(1, (step - start) / ramp_steps) for optimizer step `step` (0-based).
//
// Width (when `source`, the source's dims, is given: the FFN, the model dimension or the heads
// grew). The new units' contributions are masked, in this order, each stage ramping its own m_k
// from 0 to 1 over ramp_steps after the one before (stages that did not grow are skipped):
//   ffn    the FFN's new hidden units: in every block, the columns [H_src, H) of the weights that
//          read them (the input side, a last axis "hidden": w2; of a factored FFN the factor that
//          multiplies the units, LowRank's w2.a, BlockDense's w2.blocks, BlockShuffle's w2.blocks1,
//          and a self-guided w2.guide). Units that sit in k blocks (ffn_unit_blocks: new ones at
//          each block's end) are masked per block: the columns [H_src/k, H/k) of the weight seen
//          as [numel k / H, H / k], a 3-D factor [k, rows, H / k] as [k rows, H / k]
//   dim    the residual stream's new coordinates: block 0's input columns [D_src, D) (the
//          embedding's, and module tokens' rows), the module rows' before every block whose module
//          parameters mix into them (module_agg other than stack), and the rows [D_src, D) of every
//          block's attention.wo and of the FFN's weights whose output axis is "dim" (w2, LowRank's
//          w2.b, BlockDense's w2, a guide, BlockShuffle's w2.blocks2 through P_out: what writes the
//          stream). With block FFNs the coordinates sit in k blocks (model_dim_blocks), the new ones
//          at each block's end: [D_src / k, D / k) of every block. BlockShuffle's middle units,
//          grown with dim (or, where the FFN is narrower than dim, with the FFN: that stage), are
//          masked on the second factors' columns that read them
//   heads  the new attention heads: the columns [n_heads_src head_dim, ...) of every block's wo
// A masked weight W is multiplied as W * M (M: m_k on its masked rows or columns, products where
// two meet): the hook writes W * M into a compute view (ParamStore::set_compute_view, in the compute
// dtype) before the block's forward, and multiplies the weight's gradient by M after the block's
// backward of the step's last micro-batch (the gradient of W is M times that of W * M), before
// data-parallel hooks added later reduce it. A weight split over ranks (FSDP, HSDP) is masked in
// place in its gathered full view once it is gathered (weights_gathered), and its full-shape
// gradient before FSDP's reduce-scatter. Masking a unit's outgoing weights is masking the unit:
// at every m_k = 0 the new units change nothing (new residual coordinates stay zero; with G_zero's
// norm scaling and model.norm_eps scaled by D_src / D the function is the source's), and they get
// gradients as soon as m_k > 0.
//
// The m's live in StepScalars slots: a step captured as a CUDA graph reads each step's values. It
// acts in training, evaluation and decoding alike (the trainer's validation sees the ramp); a
// checkpoint written mid-ramp records it (RecordedRamp, below), and load_model runs it ramped at its
// step. A set_step that moves an m marks
// the weights written (values_written), so a structured FFN's pre-merged weights are made again
// from the masked views.
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/exec/hooks.h"
#include "lingua/model/dims.h"
#include "lingua/model/transformer.h"

namespace lingua {

class GrowthRamp : public LayerHooks {
 public:
  // layers: the ramped (new) blocks; ramp_steps >= 1 optimizer steps per stage; source: the
  // source's dims, for the width masks (none, or the model's own widths: depth only).
  GrowthRamp(Transformer& model, std::vector<int> layers, int64_t start, int64_t ramp_steps,
             std::optional<ModelDims> source = std::nullopt);
  ~GrowthRamp() override;  // unsets the compute views
  GrowthRamp(const GrowthRamp&) = delete;
  GrowthRamp& operator=(const GrowthRamp&) = delete;
  // Stages every m for optimizer step `step` (Transformer::begin_step uploads them).
  void set_step(int64_t step);
  double m() const { return m_; }  // the depth ramp's
  // The width stages that grew, in ramp order ("ffn", "dim", "heads"), and a stage's m now (1 for
  // one that did not grow).
  const std::vector<std::string>& width_stages() const { return stages_; }
  double width_m(const std::string& stage) const;
  // The optimizer step from which every m is 1.
  int64_t end_step() const;

  void before_forward(int layer, const Tensor& x, const StepContext& ctx) override;
  void after_forward(int layer, const Tensor& y, const StepContext& ctx) override;
  void before_backward(int layer, const Tensor& dy, const Tensor& dy_act, const StepContext& ctx) override;
  void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) override;
  void weights_gathered(int layer, const StepContext& ctx) override;

 private:
  // A [rows, dim] f32 buffer, one per size and use, kept for the hook's life (a captured graph
  // points at it).
  Tensor buffer(int use, const Tensor& like);
  const float* factor(int stage) const;  // a width stage's m on the model's device
  // A masked weight, seen as a matrix [rows, cols] (its row-major values): rows [row_from, rows)
  // times the row stage's m, columns [col_from, cols) times the column stage's (-1: none); its
  // compute view (the weight's shape) and the same memory as the matrix.
  struct Masked {
    int id = -1;
    std::string name;
    int64_t rows = 0, cols = 0, row_from = 0, col_from = 0;
    int64_t row_period = 0, col_period = 0;  // (tail_scale's: the tail of every group; 0: of the axis)
    int row_stage = -1, col_stage = -1;
    bool split = false;  // flat-sharded: masked where gathered; no view of its own
    Tensor view, matrix;
  };
  static Tensor as_matrix(const Masked& w, const Tensor& t);
  // Whether the weight is in the store (a self-guided guide leaves at its last step); one added
  // back gets its view again.
  bool live(Masked& w);
  void mask_weights(const Masked& w);
  Transformer& model_;
  std::vector<bool> ramped_;
  int64_t start_, ramp_steps_;
  double m_ = 0;
  size_t slot_;  // float: 1 - m (guide_mix's alpha weighs the block's input)
  // Width: stage index -> its name, m and slot; the masked weights per layer; the embedding's
  // masked columns (from dim_from_, by the "dim" stage).
  std::vector<std::string> stages_;
  std::vector<double> stage_m_;
  std::vector<size_t> stage_slot_;
  std::vector<std::vector<Masked>> masked_;
  int64_t dim_from_ = 0, dim_period_ = 0;  // new coordinates: c % dim_period_ >= dim_from_
  int dim_stage_ = -1;
  // The blocks l > 0 before which module tokens set their rows from parameters (module_agg other
  // than stack): those rows' new coordinates are masked there, as the embedding's before block 0.
  std::vector<bool> module_rows_;
  // The new coordinates (from dim_from_) of x's rows [0, 1) before block 0, or of its prefix rows.
  void mask_stream(int layer, const Tensor& x, const StepContext& ctx);
  std::vector<std::vector<float>> host_views_;
  std::vector<DeviceBuffer> device_views_;
  std::map<std::pair<int, int64_t>, std::vector<float>> host_;
  std::map<std::pair<int, int64_t>, DeviceBuffer> device_;
};

// A G_random ramp as data: what `lingua grow op=random` records in a grown checkpoint's growth.json
// ("ramp"), what a run started from it keeps as dump_dir/growth_ramp.json, and what a checkpoint
// written mid-ramp keeps in its train state ("growth_ramp"), so that a run continued from it and
// the commands that run it (lingua eval, generate) ramp as training did at its step.
//   {"layers": [1, 3], "steps": 500, "start": 0, "source_model": {model.* of the source}}
struct RecordedRamp {
  std::vector<int> layers;  // the new (ramped) blocks of the target
  int64_t steps = 1;        // optimizer steps per stage
  int64_t start = 0;        // the run's step at which every m is 0 (0: a run from lingua grow's checkpoint)
  ModelConfig source;       // the source model: which units, coordinates and heads are new
  std::string path;         // where it was read (messages)
};
nlohmann::json ramp_record(const RecordedRamp& ramp);
// Parses a record; a malformed one fails naming `origin` (a file, and where in it).
RecordedRamp parse_ramp_record(const nlohmann::json& j, const std::string& origin);
// The record's ramp on `model` (the grown model; its layers checked), set for step `step`. The
// caller adds it to the model's executor.
std::unique_ptr<GrowthRamp> make_growth_ramp(Transformer& model, const RecordedRamp& ramp, int64_t step);

}  // namespace lingua
