// Shared parts of the structured FFN variants (structured.h).
#include "lingua/model/ffn/structured.h"

#include <algorithm>
#include <cmath>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/linear/linear.h"
#include "lingua/ops/swiglu/swiglu.h"
#include "lingua/ops/transpose/transpose.h"

// LAPACK (in OpenBLAS): the SVD of a column-major m x n matrix.
extern "C" void dgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, double* a, const int* lda,
                        double* s, double* u, const int* ldu, double* vt, const int* ldvt, double* work,
                        const int* lwork, int* info, size_t jobu_len, size_t jobvt_len);

namespace lingua {

namespace {

// Thin SVD of row-major W [rows, cols], returned row-major: U [rows, p], S [p], Vt [p, cols], p =
// min(rows, cols). Row-major W is column-major W^T [cols, rows] = U' S V'^T, so W = V' S U'^T:
// our U is V' and our Vt is U'^T.
struct Svd {
  int p;
  std::vector<double> u, s, vt;
};
Svd thin_svd(const std::vector<double>& w, int rows, int cols) {
  const int p = std::min(rows, cols);
  std::vector<double> m(w), s(p), up((size_t)cols * p), vpt((size_t)p * rows);
  int info = 0, lwork = -1;
  double query = 0;
  dgesvd_("S", "S", &cols, &rows, m.data(), &cols, s.data(), up.data(), &cols, vpt.data(), &p, &query, &lwork, &info,
          1, 1);
  lwork = (int)query;
  std::vector<double> work((size_t)std::max(lwork, 1));
  dgesvd_("S", "S", &cols, &rows, m.data(), &cols, s.data(), up.data(), &cols, vpt.data(), &p, work.data(), &lwork,
          &info, 1, 1);
  LINGUA_CHECK(info == 0, "structured FFN init: LAPACK dgesvd failed (info ", info, ")");
  Svd r{p, std::vector<double>((size_t)rows * p), s, std::vector<double>((size_t)p * cols)};
  for (int j = 0; j < p; ++j) {
    for (int o = 0; o < rows; ++o) r.u[(size_t)o * p + j] = vpt[(size_t)o * p + j];  // V'(o, j), V'^T stored [p, rows]
    for (int i = 0; i < cols; ++i) r.vt[(size_t)j * cols + i] = up[(size_t)j * cols + i];  // U'(i, j), col-major
  }
  return r;
}

}  // namespace

std::vector<int> structured_layers(const ModelConfig& c, const char* kind) {
  std::vector<int> layers;
  if (c.ffn != kind) return layers;
  if (!c.structured.layers) {
    for (int l = 1; l < c.n_layers; ++l) layers.push_back(l);
    return layers;
  }
  layers = *c.structured.layers;
  std::sort(layers.begin(), layers.end());
  for (size_t i = 0; i < layers.size(); ++i) {
    LINGUA_CHECK(layers[i] >= 0 && layers[i] < c.n_layers, "config key 'model.structured.layers': layer ", layers[i],
                 " is outside [0, ", c.n_layers, ") (model.n_layers)");
    LINGUA_CHECK(i == 0 || layers[i - 1] != layers[i], "config key 'model.structured.layers': layer ", layers[i],
                 " is listed twice");
  }
  return layers;
}

void check_structured_keys(const ModelConfig& c, const char* kind, bool needs_rank, bool needs_nblocks,
                           const char* post_init) {
  const SelfGuidedConfig& g = c.structured.self_guided;
  static const char* const kStructured[] = {"lowrank", "blockdense", "blockshuffle"};  // this family
  LINGUA_CHECK(g.mode == "none" || std::find(std::begin(kStructured), std::end(kStructured), c.ffn) !=
                                       std::end(kStructured),
               "config key 'model.structured.self_guided.mode' is '", g.mode, "' but model.ffn is '", c.ffn,
               "': self-guided training guides structured FFN layers (model.ffn lowrank, blockdense or blockshuffle)");
  if (c.ffn != kind) return;
  LINGUA_CHECK(g.mode == "none" || g.max_step >= 1, "config key 'model.structured.self_guided.max_step' is ",
               g.max_step, ": self-guided training needs 1 or more guided steps (max_step_ratio ", g.max_step_ratio,
               " of steps gives none; raise it or set max_step)");
  LINGUA_CHECK(c.structured.premerge_max_tokens >= -1, "config key 'model.structured.premerge_max_tokens' is ",
               c.structured.premerge_max_tokens, ": a number of token rows (0: no pre-merge; -1: auto)");
  LINGUA_CHECK(g.max_step_ratio > 0 && g.max_step_ratio <= 1, "config key 'model.structured.self_guided.max_step_ratio' is ",
               g.max_step_ratio, ": a fraction of the run's steps in (0, 1]");
  const StructuredFfnConfig& s = c.structured;
  LINGUA_CHECK(!needs_rank || s.rank >= 1, "config key 'model.structured.rank' is ", s.rank, ": model.ffn=", kind,
               " needs the rank of its factors (1 or more)");
  LINGUA_CHECK(!needs_nblocks || s.nblocks >= 1, "config key 'model.structured.nblocks' is ", s.nblocks,
               ": model.ffn=", kind, " needs the number of diagonal blocks (1 or more)");
  LINGUA_CHECK(s.post_init == "none" || s.post_init == post_init, "config key 'model.structured.post_init' is '",
               s.post_init, "': model.ffn=", kind, " supports none or ", post_init);
  structured_layers(c, kind);
}

void check_divides_blocks(const ModelConfig& c, const char* kind, int64_t width, const char* what) {
  LINGUA_CHECK(width % c.structured.nblocks == 0, "config key 'model.structured.nblocks' is ", c.structured.nblocks,
               ": model.ffn=", kind, " splits ", what, " (", width, ") into that many blocks, which must divide it");
}

bool is_structured_layer(const FfnBuildArgs& a, const char* kind) {
  const std::vector<int> layers = structured_layers(a.cfg, kind);
  return std::binary_search(layers.begin(), layers.end(), a.layer);
}

ParamSpec structured_factor_spec(const FfnBuildArgs& a, const std::string& name, std::vector<int64_t> shape,
                                 std::vector<std::string> axes) {
  const StructuredFfnConfig& c = a.cfg.structured;
  ParamSpec p;
  p.name = a.prefix + name;
  p.init = ParamInit::normal(c.init == "xavier" ? (float)std::pow((double)shape.back(), -0.5) : 0.02f);
  if (c.post_init == "ortho") p.init = ortho_init(p.init, shape.size() == 3 ? shape[0] : 1);
  p.shape = std::move(shape);
  p.axes = std::move(axes);
  return p;
}

std::vector<double> dense_times_blockdiag(const std::vector<double>& b, const std::vector<double>& a, int64_t out,
                                          int64_t k, int64_t rb, int64_t in) {
  const int64_t r = k * rb, ib = in / k;
  std::vector<double> s((size_t)(out * in), 0.0);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < rb; ++j) {
        const double bv = b[(size_t)(o * r + c * rb + j)];
        const double* arow = a.data() + (c * rb + j) * ib;
        double* srow = s.data() + o * in + c * ib;
        for (int64_t i = 0; i < ib; ++i) srow[i] += bv * arow[i];
      }
  return s;
}

std::vector<float> whole_init_values(const ParamInit& init, uint64_t seed, const std::string& name,
                                     const std::vector<int64_t>& shape) {
  ParamInfo p;
  p.name = name;
  p.shape = p.local_shape = shape;
  p.numel = 1;
  for (int64_t d : shape) p.numel *= d;
  std::vector<float> v((size_t)p.numel);
  init.fill(seed, p, v.data());
  return v;
}

ParamInit ortho_init(ParamInit base, int64_t blocks) {
  ParamInit init;
  init.what = "ortho(" + base.what + ")";
  init.fill = [base, blocks](uint64_t seed, const ParamInfo& p, float* local) {
    const int64_t rows = p.shape[p.shape.size() - 2], cols = p.shape.back();
    LINGUA_ASSERT(blocks * rows * cols == p.full_numel());
    std::vector<float> w = whole_init_values(base, seed, p.name, p.shape);
    for (int64_t b = 0; b < blocks; ++b) {
      float* blk = w.data() + b * rows * cols;
      const Svd s = thin_svd(std::vector<double>(blk, blk + rows * cols), (int)rows, (int)cols);
      for (int64_t o = 0; o < rows; ++o)
        for (int64_t i = 0; i < cols; ++i) {
          double acc = 0;
          for (int j = 0; j < s.p; ++j) acc += s.u[(size_t)(o * s.p + j)] * s.vt[(size_t)(j * cols + i)];
          blk[o * cols + i] = (float)acc;
        }
    }
    for (int64_t i = 0; i < p.numel; ++i) {
      const int64_t g = p.global_index(i);
      local[i] = g < 0 ? 0.0f : w[(size_t)g];
    }
  };
  return init;
}

SvdFactors truncated_svd_factors(const std::vector<float>& w, int out, int in, int r) {
  const int k = std::min(out, in);
  LINGUA_CHECK(r <= k, "config key 'model.structured.rank' is ", r, ": post_init svd needs a rank of at most ", k,
               " (the smaller side of a [", out, ", ", in, "] layer)");
  const Svd s = thin_svd(std::vector<double>(w.begin(), w.end()), out, in);
  SvdFactors f{std::vector<double>((size_t)r * in), std::vector<double>((size_t)out * r)};
  for (int j = 0; j < r; ++j) {
    const double root = std::sqrt(s.s[j]);
    for (int i = 0; i < in; ++i) f.a[(size_t)j * in + i] = root * s.vt[(size_t)j * in + i];
    for (int o = 0; o < out; ++o) f.b[(size_t)o * r + j] = root * s.u[(size_t)o * k + j];
  }
  return f;
}

std::vector<double> FactorParam::host() const {
  const ParamInfo& p = store->info(id);
  LINGUA_CHECK(p.placement.kind == Placement::whole, "parameter '", p.name,
               "' is split over processes: its dense form needs the whole of it (consolidate the checkpoint)");
  const std::vector<float> v = store->host_param(id);
  return std::vector<double>(v.begin(), v.end());
}

void StructuredLinear::forward_unshuffled(const Tensor&, const Tensor&, Arena&, Arena&) {
  LINGUA_ASSERT(false && "forward_unshuffled of a linear without an output shuffle");
}
void StructuredLinear::backward_input_unshuffled(const Tensor&, const Tensor&, Arena&) {
  LINGUA_ASSERT(false && "backward_input_unshuffled of a linear without an output shuffle");
}

int64_t StructuredFfn::premerge_max_rows(Device device) const {
  if (premerge_max_rows_ >= 0) return premerge_max_rows_;
  // auto, from H100 measurements (bench/NOTES.md "Pre-merge"; 2026-12-06 and 2026-12-07): on
  // CUDA, up to dim 2048 a layer's forward of 1 to 256 rows is bound by kernel launches (2 GEMMs
  // merged instead of 2 to 6 kernels factored): merged it runs at the dense layer's speed, factored
  // up to 2x slower (every variant at dim 1024 and 1536, blockshuffle at 2048). From dim 5120 the
  // factors win at every row count, the layer being bound by the bytes of weights read (the factors
  // are fewer). On the CPU the factors' fewer FLOPs win.
  return device == Device::cuda && dim_ <= 2048 ? 256 : 0;
}

StructuredFfn::StructuredFfn(const FfnBuildArgs& a, const char* kind, std::unique_ptr<StructuredLinear> fc1,
                             std::unique_ptr<StructuredLinear> fc2)
    : kind_(kind),
      store_(&a.store),
      dim_(a.dims.dim),
      hidden_(a.dims.hidden),
      guided_(a.cfg.structured.self_guided),
      premerge_max_rows_(a.cfg.structured.premerge_max_tokens) {
  if (guided_.mode == "none") {
    fc1_ = std::move(fc1);
    fc2_ = std::move(fc2);
    return;
  }
  const int after = a.store.ids().back();  // the factors' last parameter: guides go after it
  auto g1 = make_guided_linear(a, "w13", 2 * hidden_, a.dims.dim, "2hidden", "dim", after, std::move(fc1));
  auto g2 = make_guided_linear(a, "w2", a.dims.dim, hidden_, "dim", "hidden", after, std::move(fc2));
  guides_[0] = g1.get();
  guides_[1] = g2.get();
  fc1_ = std::move(g1);
  fc2_ = std::move(g2);
}

void StructuredFfn::begin_step(int64_t step) {
  for (GuidedStructuredLinear* g : guides_)
    if (g) g->begin_step(step);
  if (guides_[0]) merged_epoch_ = 0;  // alpha moved
}

int64_t StructuredFfn::idle_params() const {
  int64_t n = 0;
  for (const GuidedStructuredLinear* g : guides_)
    if (g && g->present() && !g->runs(true)) n += g->guide_params();
  return n;
}

bool StructuredFfn::work_varies_per_step() const {
  return guides_[0] && guided_.reduce_flop && guides_[0]->present();
}

int64_t StructuredFfn::replayed_steps() const { return guided_.mode == "fixedflop" ? guided_.max_step : 0; }

void StructuredFfn::add_step_metrics(std::map<std::string, double>& m) const {
  if (!guides_[0]) return;
  m["self_guided/alpha"] = guides_[0]->alpha();
  double& run = m["self_guided/guides_run"];
  for (const GuidedStructuredLinear* g : guides_) run += g->runs(true) ? 1 : 0;
}

namespace {

// W [out, in] = S of a structured linear (in, out its sizes), in W's dtype: S^T = fc(I) row block
// by row block (identity rows in `act`), then transposed. Memory of its own, freed on return.
void merge_linear(StructuredLinear& fc, int64_t in, int64_t out, DType act, const Tensor& w) {
  const Device dev = w.device;
  const int64_t k = std::min<int64_t>(in, 1024);  // identity rows per forward
  Arena tmp(dev);
  tmp.reserve(arena_bytes(in * out, act) + arena_bytes(k * in, act) + fc.saved_bytes(k, act) +
              fc.scratch_bytes(k, act) + 4 * Arena::kAlign);
  const Tensor st = arena_tensor(tmp, {in, out}, act);
  const Tensor eye = arena_tensor(tmp, {k, in}, act);
  const size_t es = dtype_size(act);
  // The host identity block, in `act`: only the diagonal moves from one block to the next.
  std::vector<float> e_f32(act == DType::bf16 ? 0 : (size_t)(k * in), 0.0f);
  std::vector<uint16_t> e_bf16(act == DType::bf16 ? (size_t)(k * in) : 0, 0);
  auto set_diagonal = [&](int64_t r0, int64_t rows, float v) {
    for (int64_t j = 0; j < rows; ++j) {
      const size_t i = (size_t)(j * in + r0 + j);
      if (act == DType::bf16)
        e_bf16[i] = float_to_bf16(v);
      else
        e_f32[i] = v;
    }
  };
  for (int64_t r0 = 0; r0 < in; r0 += k) {
    const int64_t rows = std::min(k, in - r0);
    if (r0 > 0) set_diagonal(r0 - k, k, 0.0f);
    set_diagonal(r0, rows, 1.0f);
    const Tensor x(eye.data, {rows, in}, act, dev);
    copy_tensor(x, Tensor(act == DType::bf16 ? (void*)e_bf16.data() : (void*)e_f32.data(), {rows, in}, act, Device::cpu));
    const Tensor y(static_cast<char*>(st.data) + (size_t)(r0 * out) * es, {rows, out}, act, dev);
    const size_t mark = tmp.mark();
    fc.forward(x, y, Tensor(), tmp, tmp);
    tmp.release_to(mark);
  }
  transpose(st, w);
}

}  // namespace

void StructuredFfn::merge_into(DType act, const Tensor& w13, const Tensor& w2) const {
  for (GuidedStructuredLinear* g : guides_)
    if (g) g->set_training(false);  // (a guide mixes in with the step's alpha, no reduce_flop draw)
  merge_linear(*fc1_, dim_, 2 * hidden_, act, w13);
  merge_linear(*fc2_, hidden_, dim_, act, w2);
}

void StructuredFfn::merge(DType act) {
  const Device dev = store_->device();
  const bool allocated = merged_w13_.data && merged_w13_.dtype == act && merged_w13_.device == dev;
  if (allocated && merged_epoch_ == store_->values_epoch()) return;
  if (!allocated) {
    merged_ = Arena(dev);
    merged_.reserve(arena_bytes(2 * hidden_ * dim_, act) + arena_bytes(dim_ * hidden_, act));
    merged_w13_ = arena_tensor(merged_, {2 * hidden_, dim_}, act);
    merged_w2_ = arena_tensor(merged_, {dim_, hidden_}, act);
  }
  merge_into(act, merged_w13_, merged_w2_);
  merged_epoch_ = store_->values_epoch();
  ++merges_;
}

void StructuredFfn::forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) {
  const int64_t n = ctx.rows();
  for (GuidedStructuredLinear* g : guides_)
    if (g) g->set_training(ctx.save_for_backward);
  Arena& sc = *ctx.scratch;
  const size_t mark = sc.mark();  // (without saving, the kept tensors are scratch too)
  Arena& keep = forward_arena(ctx);
  ab_ = arena_tensor(keep, {n, 2 * hidden_}, ctx.act);
  Tensor g = arena_tensor(sc, {n, hidden_}, ctx.act);
  if (!ctx.save_for_backward && n <= premerge_max_rows(x.device)) {
    merge(ctx.act);
    linear_forward(x, merged_w13_, ab_);
    swiglu_forward_packed(ab_, g);
    linear_forward(g, merged_w2_, out, residual);
  } else {
    if (const int64_t k = fc1_->output_shuffle()) {  // ab_ holds fc1's output before its last shuffle
      fc1_->forward_unshuffled(x, ab_, keep, sc);
      swiglu_forward_shuffled(ab_, k, g);
    } else {
      fc1_->forward(x, ab_, Tensor(), keep, sc);
      swiglu_forward_packed(ab_, g);
    }
    fc2_->forward(g, out, residual, keep, sc);
  }
  sc.release_to(mark);
}

void StructuredFfn::backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) {
  const int64_t n = ctx.rows();
  Arena& ar = *ctx.scratch;
  const size_t mark = ar.mark();
  LINGUA_ASSERT(dout.dtype == ctx.act);
  Tensor dg = arena_tensor(ar, {n, hidden_}, ctx.act);
  fc2_->backward_input(dout, dg, ar);
  const int64_t k = fc1_->output_shuffle();
  if (k)
    swiglu_backward_shuffled(ab_, k, dg, ab_, dg);  // as below, in the unshuffled order
  else
    swiglu_backward_packed(ab_, dg, ab_, dg);  // ab <- (da, db); dg <- the recomputed g
  fc2_->backward_weight(dg, dout);
  if (k)
    fc1_->backward_input_unshuffled(ab_, dx, ar);
  else
    fc1_->backward_input(ab_, dx, ar);
  fc1_->backward_weight(x, ab_);
  ar.release_to(mark);
}

std::optional<DenseSwiGLU> StructuredFfn::dense_swiglu() const {
  DenseSwiGLU d;
  std::vector<float> w13;
  if (store_->device() == Device::cpu) {  // the pre-merge products in f32 through BLAS: fast at any width
    w13.resize((size_t)(2 * hidden_ * dim_));
    d.w2.resize((size_t)(dim_ * hidden_));
    merge_into(DType::f32, Tensor(w13.data(), {2 * hidden_, dim_}), Tensor(d.w2.data(), {dim_, hidden_}));
  } else {  // the factors' host copies multiplied in double (the device holds bf16 products only)
    const std::vector<double> fc1 = fc1_->dense(), fc2 = fc2_->dense();
    w13.assign(fc1.begin(), fc1.end());
    d.w2.assign(fc2.begin(), fc2.end());
  }
  const size_t half = w13.size() / 2;
  d.w1.assign(w13.begin(), w13.begin() + half);
  d.w3.assign(w13.begin() + half, w13.end());
  return d;
}

size_t StructuredFfn::saved_bytes(int64_t rows, DType act) const {
  return arena_bytes(rows * 2 * hidden_, act) + fc1_->saved_bytes(rows, act) + fc2_->saved_bytes(rows, act);
}

size_t StructuredFfn::scratch_bytes(int64_t rows, DType act) const {
  return arena_bytes(rows * hidden_, act) + fc1_->scratch_bytes(rows, act) + fc2_->scratch_bytes(rows, act);
}

}  // namespace lingua
