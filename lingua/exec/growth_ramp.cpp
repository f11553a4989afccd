#include "lingua/exec/growth_ramp.h"

#include <algorithm>

#include "lingua/config/config.h"
#include "lingua/model/growth.h"
#include "lingua/ops/add/add.h"
#include "lingua/ops/cast/cast.h"
#include "lingua/ops/guide_mix/guide_mix.h"
#include "lingua/ops/tail_scale/tail_scale.h"

namespace lingua {

namespace {
constexpr int kInput = 0, kGradient = 1;  // the buffers: a block's input; the input's direct gradient
}

GrowthRamp::GrowthRamp(Transformer& model, std::vector<int> layers, int64_t start, int64_t ramp_steps,
                       std::optional<ModelDims> source)
    : model_(model), ramped_(model.n_layers(), false), start_(start), ramp_steps_(ramp_steps) {
  LINGUA_CHECK(ramp_steps >= 1, "the growth ramp needs at least one step (growth.ramp_steps is ", ramp_steps, ")");
  for (int l : layers) {
    LINGUA_CHECK(l >= 0 && l < model.n_layers(), "growth ramp: layer ", l, " is not one of the model's ",
                 model.n_layers());
    ramped_[l] = true;
  }
  ParamStore& ps = model.params();
  StepScalars& sc = ps.step_scalars();
  slot_ = sc.slot("growth/one_minus_m", sizeof(float), StepScalars::Writer::host);
  masked_.resize((size_t)model.n_layers());
  if (source) {
    const ModelDims &s = *source, &t = model.dims();
    LINGUA_CHECK(s.head_dim == t.head_dim && s.dim <= t.dim && s.hidden <= t.hidden && s.n_heads <= t.n_heads,
                 "G_random's width masks: the source (dim ", s.dim, ", FFN ", s.hidden, ", ", s.n_heads, " heads of ",
                 s.head_dim, ") is not a part of the target (dim ", t.dim, ", FFN ", t.hidden, ", ", t.n_heads,
                 " heads of ", t.head_dim, ")");
    auto stage = [&](bool grew, const std::string& name) {
      if (!grew) return -1;
      stages_.push_back(name);
      stage_slot_.push_back(sc.slot("growth/m_" + name, sizeof(float), StepScalars::Writer::host));
      stage_m_.push_back(0.0);
      return (int)stages_.size() - 1;
    };
    const int ffn = stage(t.hidden > s.hidden, "ffn"), dim = stage(t.dim > s.dim, "dim"),
              heads = stage(t.n_heads > s.n_heads, "heads");
    dim_stage_ = dim;
    // The residual stream's coordinates sit in kd blocks (block-structured FFNs: growth.h's
    // model_dim_blocks), the new ones at each block's end: [Ds / kd, D / kd) of every block.
    const int64_t kd = model_dim_blocks(model).blocks;
    dim_from_ = s.dim / kd;
    dim_period_ = t.dim / kd;
    module_rows_.assign((size_t)model.n_layers(), false);
    if (const ModuleTokens* mt = model.module_tokens(); mt && dim >= 0)
      for (int l = 1; l < model.n_layers(); ++l) module_rows_[(size_t)l] = mt->has_params(l);
    // A masked weight seen as a matrix [numel / C, C] (a 3-D block factor [k, rows, n] as [k rows, n];
    // a dense [dim, H] whose units sit in k blocks as [dim k, H / k]): the columns c with
    // c % col_period >= col_from by the column stage, the rows likewise by the row stage (period 0:
    // the whole axis).
    struct Tail {
      int stage = -1;
      int64_t from = 0, period = 0;
    };
    auto mask = [&](int layer, int id, int64_t C, Tail cols, Tail rows) {
      const ParamInfo& p = ps.info(id);
      Masked w;
      w.id = id;
      w.name = p.name;
      w.cols = C;
      w.rows = p.full_numel() / C;
      w.row_stage = rows.stage;
      w.row_from = rows.stage >= 0 ? rows.from : w.rows;
      w.row_period = rows.stage >= 0 ? rows.period : 0;
      w.col_stage = cols.stage;
      w.col_from = cols.stage >= 0 ? cols.from : C;
      w.col_period = cols.stage >= 0 ? cols.period : 0;
      // Split over ranks (FSDP): masked in place where it is gathered (weights_gathered).
      w.split = p.placement.kind == Placement::flat_shard;
      LINGUA_CHECK(w.split || p.placement.kind == Placement::whole, "G_random's width masks: '", p.name,
                   "' is column-sliced over ranks, which the masks do not follow");
      if (w.split) {
        masked_[(size_t)layer].push_back(w);
        return;
      }
      const int64_t n = w.rows * C;
      void* data;
      DType dt = DType::f32;
      if (ps.device() == Device::cuda) {
        device_views_.emplace_back((size_t)n * sizeof(uint16_t));
        data = device_views_.back().data();
        dt = DType::bf16;
      } else {
        host_views_.emplace_back((size_t)n);
        data = host_views_.back().data();
      }
      w.view = p.shape.size() == 2 ? Tensor(data, {p.shape[0], p.shape[1]}, dt, ps.device())
                                   : Tensor(data, {p.shape[0], p.shape[1], p.shape[2]}, dt, ps.device());
      w.matrix = Tensor(data, {w.rows, C}, dt, ps.device());
      masked_[(size_t)layer].push_back(w);
    };
    const std::vector<int> ids = ps.ids();
    for (int l = 0; l < model.n_layers(); ++l) {
      const std::string prefix = "layers." + std::to_string(l) + ".";
      // The FFN's weights, by their axes' roles (no variant named):
      //  - those that read its hidden units (the input side, a last axis "hidden", of a weight, not
      //    a looked-up table: w2, LowRank's w2.a, the block variants' first fc2 factor, a
      //    self-guided w2 guide): the "ffn" stage on the new units' columns, the tail of the axis
      //    or of each of the k blocks the units sit in (ffn_unit_blocks: new units at each block's
      //    end);
      //  - those that write the residual stream (output axis "dim": a 2-D w2, LowRank's w2.b, a
      //    guide; BlockShuffle's last fc2 factor, whose rows P_out interleaves): the "dim" stage on
      //    the new coordinates' rows;
      //  - BlockShuffle's second factors, which read the middle units (a last axis "mid", through
      //    P_mid) where those grew: on the new ones, the stage they grew with ("dim", else "ffn").
      const int64_t k = ffn >= 0 ? ffn_unit_blocks(model, l).blocks : 1;
      int readers = 0, writers = 0;
      for (int id : ids) {
        const ParamInfo& p = ps.info(id);
        if (p.name.rfind(prefix + "feed_forward.", 0) != 0 || p.embedding || p.shape.size() < 2) continue;
        const size_t n = p.shape.size();
        const bool reads = ffn >= 0 && p.axes.back() == "hidden";
        const bool writes = dim >= 0 && p.axes[n - 2] == "dim";
        const bool mids = block_factor_interleaved(p.axes);  // (BlockShuffle's second factor reads them)
        for (size_t a = 1; dim >= 0 && n == 3 && a < n; ++a)
          LINGUA_CHECK(p.axes[a] != "dim" || a == n - 1 || mids, "G_random's width masks: '", p.name,
                       "' ", shape_str(p.shape), " writes the model dimension in blocks, which cannot be masked; use "
                       "G_zero or G_split, or keep model.dim");
        if (!reads && !writes && !mids) continue;
        Tail cols, rows;
        int64_t C = p.shape.back();
        if (reads) {
          const int64_t blocks = n == 3 ? p.shape[0] : 1, units = blocks * p.shape.back();
          LINGUA_CHECK(units == t.hidden && t.hidden % k == 0 && s.hidden % k == 0 && (n == 2 || blocks == k),
                       "G_random's width masks: '", p.name, "' ", shape_str(p.shape), " reads ", units,
                       " FFN units in ", blocks, " blocks, not the model's ", t.hidden, " in ", k,
                       " blocks of a source's ", s.hidden);
          C = t.hidden / k;
          cols = {ffn, s.hidden / k, 0};
          ++readers;
        }
        if (mids) {
          // [k, out / k, q]: middle unit a k + c of the k q is block c's column a; a linear's middle
          // width is the smaller of its input and output (fc1: dim, 2 hidden; fc2: hidden, dim), its
          // new units at the end of each of the k first-factor blocks: columns a % (q / k) >= Ms / k^2.
          const int64_t kb = p.shape[0], q = p.shape[2], mt = kb * q;
          const int64_t ms = p.axes[1] == "dim" ? std::min<int64_t>(s.hidden, s.dim)
                                                : std::min<int64_t>(s.dim, 2 * s.hidden);
          if (ms < mt) {
            const int stage = dim >= 0 && mt == t.dim ? dim : ffn;  // (grown with the model dimension, else the FFN)
            LINGUA_CHECK(stage >= 0 && ms % (kb * kb) == 0 && mt % (kb * kb) == 0, "G_random's width masks: '",
                         p.name, "' ", shape_str(p.shape), " reads ", mt, " middle units in ", kb,
                         " interleaved blocks, of a source's ", ms);
            cols = {stage, ms / kb / kb, q / kb};
          }
        }
        if (writes) {
          if (n == 2) {  // rows [dim]: per dim block (a matrix [dim r, C]: r rows per coordinate)
            const int64_t r = p.shape.back() / C;
            rows = {dim, dim_from_ * r, dim_period_ * r};
          } else {  // [k, dim / k, q], row a of block c coordinate a k + c: new from (Ds / k) / k of each (D / k) / k
            const int64_t kb = p.shape[0];
            LINGUA_CHECK(kd == kb && dim_period_ % kb == 0 && dim_from_ % kb == 0, "G_random's width masks: '",
                         p.name, "' ", shape_str(p.shape), " writes the model dimension interleaved over ", kb,
                         " blocks, and its coordinates sit in ", kd, " blocks of ", dim_period_);
            rows = {dim, dim_from_ / kb, dim_period_ / kb};
          }
          ++writers;
        }
        if (cols.stage < 0 && rows.stage < 0) continue;
        mask(l, id, C, cols, rows);
      }
      LINGUA_CHECK((ffn < 0 || readers > 0) && (dim < 0 || writers > 0), "G_random's width masks: layer ", l,
                   "'s FFN has no ", ffn >= 0 && readers == 0 ? "weight that reads its hidden units" : "weight that writes the "
                   "model dimension", " to mask; use G_zero or G_split");
      if (heads >= 0 || dim >= 0) {
        const int id = ps.find(prefix + "attention.wo.weight");
        LINGUA_CHECK(id >= 0 && ps.info(id).shape.size() == 2, "G_random's width masks need a dense "
                     "'attention.wo.weight' in every block (layer ", l, " has none); use G_zero or G_split");
        mask(l, id, ps.info(id).shape[1], {heads, (int64_t)s.n_heads * s.head_dim, 0},
             {dim, dim_from_, dim_period_});
      }
    }
  }
  set_step(start);
  for (auto& layer : masked_)
    for (Masked& w : layer) {
      if (w.split) continue;
      mask_weights(w);  // (the staged m's: the values of the first step on the CPU, zeros on CUDA)
      ps.set_compute_view(w.id, w.view);
    }
}

GrowthRamp::~GrowthRamp() {
  for (auto& layer : masked_)
    for (Masked& w : layer)
      if (!w.split && model_.params().find(w.name) == w.id) model_.params().set_compute_view(w.id, Tensor());
}

bool GrowthRamp::live(Masked& w) {
  ParamStore& ps = model_.params();
  const int id = ps.find(w.name);
  if (id < 0) return false;  // removed (a self-guided guide after its last step)
  if (id != w.id) {          // added back (a new id)
    w.id = id;
    if (!w.split) ps.set_compute_view(id, w.view);
  }
  return true;
}

void GrowthRamp::set_step(int64_t step) {
  StepScalars& sc = model_.params().step_scalars();
  m_ = std::clamp((double)(step - start_) / (double)ramp_steps_, 0.0, 1.0);
  *sc.staged<float>(slot_) = (float)(1.0 - m_);
  bool moved = false;
  for (size_t k = 0; k < stages_.size(); ++k) {
    const double m = std::clamp((double)(step - start_ - (int64_t)k * ramp_steps_) / (double)ramp_steps_, 0.0, 1.0);
    moved = moved || m != stage_m_[k];
    stage_m_[k] = m;
    *sc.staged<float>(stage_slot_[k]) = (float)m;
  }
  // What matmuls read moved with the m's: what is derived from it (a structured FFN's pre-merged
  // weights) is made again.
  if (moved) model_.params().values_written();
}

double GrowthRamp::width_m(const std::string& stage) const {
  for (size_t k = 0; k < stages_.size(); ++k)
    if (stages_[k] == stage) return stage_m_[k];
  return 1.0;
}

int64_t GrowthRamp::end_step() const {
  return start_ + ramp_steps_ * std::max<int64_t>(1, (int64_t)stages_.size());
}

const float* GrowthRamp::factor(int stage) const {
  return stage < 0 ? nullptr : model_.params().step_scalars().at<float>(stage_slot_[(size_t)stage]);
}

Tensor GrowthRamp::as_matrix(const Masked& w, const Tensor& t) {
  return Tensor(t.data, {w.rows, w.cols}, t.dtype, t.device);
}

void GrowthRamp::mask_weights(const Masked& w) {
  const ParamStore& ps = model_.params();
  if (w.split) {  // the gathered full view, in place (gathered afresh before each use)
    const Tensor m = as_matrix(w, ps.compute_param(w.id));
    tail_scale(m, w.row_from, factor(w.row_stage), w.col_from, factor(w.col_stage), m, w.row_period, w.col_period);
    return;
  }
  tail_scale(as_matrix(w, ps.param(w.id)), w.row_from, factor(w.row_stage), w.col_from, factor(w.col_stage),
             w.matrix, w.row_period, w.col_period);
}

Tensor GrowthRamp::buffer(int use, const Tensor& like) {
  const int64_t n = like.numel();
  const std::pair<int, int64_t> key{use, n};
  void* p;
  if (like.device == Device::cuda) {
    DeviceBuffer& b = device_[key];
    if (!b.data()) b = DeviceBuffer((size_t)n * sizeof(float));
    p = b.data();
  } else {
    std::vector<float>& b = host_[key];
    b.resize((size_t)n);
    p = b.data();
  }
  return Tensor(p, {like.size(0), like.size(1)}, DType::f32, like.device);
}

void GrowthRamp::before_forward(int l, const Tensor& x, const StepContext& ctx) {
  // The embedding's new coordinates (block 0's input), then the block's masked weights, then (a
  // ramped block) its input kept: masked, as the block reads it. (Decoding runs the block in place
  // on x.)
  mask_stream(l, x, ctx);
  for (Masked& w : masked_[(size_t)l])
    if (!w.split && live(w)) mask_weights(w);
  if (!ramped_[l]) return;
  const Tensor keep = buffer(kInput, x);
  cast_into(keep, x);
}

void GrowthRamp::mask_stream(int l, const Tensor& x, const StepContext& ctx) {
  if (dim_stage_ < 0) return;
  const float* m = factor(dim_stage_);
  if (l == 0) {
    tail_scale(x, x.size(0), nullptr, dim_from_, m, x, 0, dim_period_);
    return;
  }
  const SeqLayout& seq = ctx.seq;
  if (!module_rows_[(size_t)l] || seq.prefix == 0) return;  // (a decoding step after the first: none)
  const int64_t D = x.size(1), bytes = (int64_t)dtype_size(x.dtype);
  for (int b = 0; b < seq.B; ++b) {
    const Tensor rows((char*)x.data + (int64_t)b * seq.S() * D * bytes, {seq.prefix, D}, x.dtype, x.device);
    tail_scale(rows, seq.prefix, nullptr, dim_from_, m, rows, 0, dim_period_);
  }
}

void GrowthRamp::weights_gathered(int l, const StepContext&) {
  for (Masked& w : masked_[(size_t)l])
    if (w.split && live(w)) mask_weights(w);
}

void GrowthRamp::after_forward(int l, const Tensor& y, const StepContext&) {
  if (!ramped_[l]) return;
  const float* one_minus_m = model_.params().step_scalars().at<float>(slot_);
  guide_mix_forward(y, buffer(kInput, y), one_minus_m, y);  // y = (1 - m) x + m y
}

void GrowthRamp::before_backward(int l, const Tensor& dy, const Tensor& dy_act, const StepContext&) {
  if (!ramped_[l]) return;
  const float* one_minus_m = model_.params().step_scalars().at<float>(slot_);
  // The block's output gradient m dy' (in place), the input's direct part (1 - m) dy' kept.
  guide_mix_backward(dy, one_minus_m, dy, buffer(kGradient, dy));
  if (dy_act.data != dy.data) cast_into(dy_act, dy);
}

void GrowthRamp::after_backward(int l, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) {
  // The reverse of before_forward: the ramp's direct gradient, then the stream's mask (a diagonal
  // map: the same call on the gradient).
  const bool ramped = ramped_[l], masked = dim_stage_ >= 0 && (l == 0 || module_rows_[(size_t)l]);
  if (ramped) add_into(dx, buffer(kGradient, dx));
  mask_stream(l, dx, ctx);
  if ((ramped || masked) && dx_act.data != dx.data) cast_into(dx_act, dx);
  // A masked weight's gradient: M times the gradient of W * M, once the micro-batches are summed.
  if (!ctx.last_micro_batch) return;
  for (Masked& w : masked_[(size_t)l]) {
    if (!live(w)) continue;
    const Tensor g = model_.params().grad(w.id);
    if (g.data) {
      const Tensor gm = as_matrix(w, g);
      tail_scale(gm, w.row_from, factor(w.row_stage), w.col_from, factor(w.col_stage), gm, w.row_period,
                 w.col_period);
    }
  }
}

nlohmann::json ramp_record(const RecordedRamp& ramp) {
  return {{"layers", ramp.layers},
          {"steps", ramp.steps},
          {"start", ramp.start},
          {"source_model", nlohmann::json::parse(config_to_json(ramp.source))}};
}

RecordedRamp parse_ramp_record(const nlohmann::json& j, const std::string& origin) {
  RecordedRamp r;
  r.path = origin;
  try {
    r.layers = j.at("layers").get<std::vector<int>>();
    r.steps = j.at("steps").get<int64_t>();
    r.start = j.value("start", (int64_t)0);
    r.source = config_from_json_text<ModelConfig>(j.at("source_model").dump(), origin + " (ramp.source_model)");
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": its G_random ramp record (layers, steps, start, source_model) is malformed: ", e.what());
  }
  LINGUA_CHECK(r.steps >= 1, origin, ": ramp.steps is ", r.steps, ", expected >= 1");
  LINGUA_CHECK(r.start >= 0, origin, ": ramp.start is ", r.start, ", expected >= 0");
  return r;
}

std::unique_ptr<GrowthRamp> make_growth_ramp(Transformer& model, const RecordedRamp& ramp, int64_t step) {
  for (int l : ramp.layers)
    LINGUA_CHECK(l >= 0 && l < model.n_layers(), ramp.path, ": its G_random ramp names layer ", l,
                 ", but the model has ", model.n_layers(), " (model.n_layers)");
  ModelDims source;
  try {
    source = resolve_dims(ramp.source, model.dims().vocab);
  } catch (const Error& e) {
    fail(ramp.path, ": its G_random ramp's source model: ", e.what());
  }
  auto r = std::make_unique<GrowthRamp>(model, ramp.layers, ramp.start, ramp.steps, source);
  r->set_step(step);
  return r;
}

}  // namespace lingua
