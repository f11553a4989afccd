// STEM FFN (SPEC §2): the up-projection w3 x of SwiGLU is replaced by a row of a per-layer table
// indexed by the input token at the same position:
//   out = w2(silu(w1 x) * E[token])
// E: [vocab, hidden] f32, in its own optimizer group ("stem", hyper-parameters optim.stem.*,
// row-sparse with optim.stem.sparse), an embedding for the accounting (memory, not FLOPs). Layers
// not in model.stem_layers are dense SwiGLU.
// Table parallelism (distributed.stem_parallel_size P, lingua/dist/table_parallel.h) splits the
// table by columns: a rank holds its [vocab, hidden / P] slice (Placement::ColumnSlice), and the
// lookups go through StepContext::sliced_tables, which returns full rows for this rank's tokens
// (and scatter-adds their gradients into the local columns).
#include "lingua/model/ffn/stem.h"

#include <algorithm>
#include <cmath>

#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/linear.h"
#include "lingua/model/sliced_table.h"
#include "lingua/ops/embedding/embedding.h"
#include "lingua/ops/op_checks.h"
#include "lingua/ops/swiglu/swiglu.h"

namespace lingua {

std::unique_ptr<FeedForward> make_swiglu_ffn(const FfnBuildArgs& args);

std::vector<int> stem_layers(const ModelConfig& c) {
  std::vector<int> layers;
  if (c.ffn != "stem") return layers;
  if (!c.stem_layers) {
    for (int l = 1; l < c.n_layers; ++l) layers.push_back(l);
    return layers;
  }
  layers = *c.stem_layers;
  std::sort(layers.begin(), layers.end());
  for (size_t i = 0; i < layers.size(); ++i) {
    const int l = layers[i];
    LINGUA_CHECK(l >= 0 && l < c.n_layers, "config key 'model.stem_layers': layer ", l, " is outside [0, ", c.n_layers,
                 ") (model.n_layers)");
    LINGUA_CHECK(i == 0 || layers[i - 1] != l, "config key 'model.stem_layers': layer ", l, " is listed twice");
  }
  return layers;
}

void check_stem_config(const ModelConfig& c, const OptimConfig* optim) {
  LINGUA_CHECK(c.ffn == "stem" || !c.stem_layers, "config key 'model.stem_layers' is set but model.ffn is '", c.ffn,
               "': set model.ffn=stem to use STEM layers");
  LINGUA_CHECK(c.ffn == "stem" || !optim || !optim->stem.sparse,
               "config key 'optim.stem.sparse' is true but the model has no STEM tables (set model.ffn=stem)");
  // Module tokens are rows without a token to look up (module_tokens.h).
  const bool modules_run = c.enabled_modules ? !c.enabled_modules->empty() : !c.modules.empty();
  LINGUA_CHECK(c.ffn != "stem" || !modules_run,
               "module tokens with model.ffn=stem: STEM layers look their rows up by token id, and module rows have "
               "no token; disable the modules (model.enabled_modules=[]) or use another FFN");
  stem_layers(c);
}

std::string stem_table_name(int layer) {
  return "layers." + std::to_string(layer) + ".feed_forward.stem_embedding.weight";
}

namespace {

// optim.stem.* over optim.*: the tables' group.
OptimGroupHyper stem_group_hyper(const OptimConfig& cfg) {
  const StemOptimConfig& o = cfg.stem;
  return {o.lr.value_or(cfg.lr),       o.weight_decay.value_or(cfg.weight_decay), o.beta1.value_or(cfg.beta1),
          o.beta2.value_or(cfg.beta2), o.epsilon.value_or(cfg.epsilon),           o.clip.value_or(cfg.clip),
          o.sparse};
}

class StemFfn final : public FeedForward {
 public:
  explicit StemFfn(const FfnBuildArgs& a) : hidden_(a.dims.hidden) {
    // w1, w2 as Lingua's SwiGLU; the table as Xavier normal on [vocab, hidden].
    const FfnInitStd init = ffn_init_std(a);
    const int64_t dim = a.dims.dim;
    w1_ = Linear(a.store, ffn_weight_spec(a, "w1.weight", hidden_, dim, "hidden", "dim", init.in));
    w2_ = Linear(a.store, ffn_weight_spec(a, "w2.weight", dim, hidden_, "dim", "hidden", init.out));
    a.store.declare_group({kStemGroup, stem_group_hyper, "STEM tables"});
    ParamSpec t;
    t.name = stem_table_name(a.layer);
    t.shape = {(int64_t)a.dims.vocab, hidden_};
    t.axes = {"vocab", "hidden"};
    t.init = ParamInit::normal((float)std::sqrt(2.0 / ((double)a.dims.vocab + (double)hidden_)));
    t.group = kStemGroup;
    t.embedding = true;
    t.compute_copy = false;  // gathered from the fp32 weights: a step reads only its tokens' rows
    table_ = a.store.add(std::move(t));
    store_ = &a.store;
  }

  void forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) override {
    LINGUA_CHECK(ctx.seq.prefix == 0, "STEM layers do not take prefix rows (they have no token to look up)");
    const int64_t n = ctx.rows();
    Arena& sc = *ctx.scratch;
    size_t mark = sc.mark();
    a_ = arena_tensor(forward_arena(ctx), {n, hidden_}, ctx.act);  // w1 x, kept
    // e = E[token] (not kept: backward gathers it again, as cheap as reading it back), then
    // g = silu(a) * e written over it.
    Tensor e = arena_tensor(sc, {n, hidden_}, ctx.act);
    w1_.forward(x, a_);
    lookup(ctx, e);
    swiglu_forward(a_, e, e);
    w2_.forward(e, out, residual);
    sc.release_to(mark);
  }

  void backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) override {
    const int64_t n = ctx.rows();
    Arena& ar = *ctx.scratch;
    size_t mark = ar.mark();
    LINGUA_ASSERT(dout.dtype == ctx.act);
    // dg = dout W2; one pass then writes da over a, de over e and the recomputed g over dg.
    Tensor dg = arena_tensor(ar, {n, hidden_}, ctx.act);
    Tensor e = arena_tensor(ar, {n, hidden_}, ctx.act);
    w2_.backward_input(dout, dg);
    lookup(ctx, e);
    swiglu_backward(a_, e, dg, a_, e, dg);
    w2_.backward_weight(dg, dout);
    const Tensor dtable = sliced() ? store_->local_grad(table_) : store_->grad(table_);
    if (is_given(dtable)) {  // deterministic scatter-add of de
      if (sliced()) ctx.sliced_tables->backward(ctx.tokens, e, dtable, *ctx.scratch);
      else embedding_backward(ctx.tokens, e, dtable);
    }
    w1_.backward(x, a_, dx);
    ar.release_to(mark);
  }

  size_t saved_bytes(int64_t rows, DType act) const override { return arena_bytes(rows * hidden_, act); }
  size_t scratch_bytes(int64_t rows, DType act) const override {
    const int group = store_->info(table_).placement.size;  // a sliced table's lookups exchange rows
    return 2 * arena_bytes(rows * hidden_, act) + (sliced() ? sliced_lookup_scratch_bytes(rows, hidden_, group, act) : 0);
  }
  // The table is looked up, not multiplied: w1 and w2 only.
  int64_t matmul_params() const override { return w1_.out() * w1_.in() + w2_.out() * w2_.in(); }
  const char* kind() const override { return "stem"; }

 private:
  bool sliced() const { return store_->info(table_).placement.kind == Placement::column_slice; }
  // e = E[token], from the local table or from the group's slices.
  void lookup(const StepContext& ctx, const Tensor& e) const {
    if (!sliced()) return embedding_forward(ctx.tokens, store_->param(table_), e);
    LINGUA_CHECK(ctx.sliced_tables, "STEM table '", store_->info(table_).name, "' is split by columns over ",
                 store_->info(table_).placement.size,
                 " processes but no table-parallel layer is attached (lingua/dist/table_parallel.h)");
    ctx.sliced_tables->forward(ctx.tokens, store_->local_param(table_), e, *ctx.scratch);
  }

  ParamStore* store_ = nullptr;
  int64_t hidden_;
  Linear w1_, w2_;
  int table_ = -1;
  Tensor a_;  // saved: [N, hidden] w1 x
};

}  // namespace

std::unique_ptr<FeedForward> make_stem_ffn(const FfnBuildArgs& a) {
  const std::vector<int> layers = stem_layers(a.cfg);
  if (!std::binary_search(layers.begin(), layers.end(), a.layer)) return make_swiglu_ffn(a);
  return std::make_unique<StemFfn>(a);
}

namespace {

// modeling_lingua_stem.py: the transformers model class of an exported STEM model.
const char* kStemModelingPy = R"PY(# A lingua STEM model for Hugging Face transformers, written by `lingua export-hf`.
# Llama, except that in the layers listed in config.stem_layers the MLP's up-projection is a row of
# a per-layer table indexed by the input token at the same position:
#     mlp(x) = down_proj(silu(gate_proj(x)) * stem_embedding[token])
# Load with AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True). The token ids are
# needed inside the MLPs, so the model takes input_ids (not inputs_embeds).
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM


class LinguaStemLlamaConfig(LlamaConfig):
    model_type = "lingua_stem_llama"

    def __init__(self, stem_layers=(), **kwargs):
        self.stem_layers = list(stem_layers)
        super().__init__(**kwargs)


class StemMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.stem_embedding = nn.Embedding(config.vocab_size, config.intermediate_size)
        self.token_ids = None  # [batch, seq]: the ids of the rows of the running forward

    def forward(self, x):
        up = self.stem_embedding(self.token_ids).to(x.dtype)
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * up)


class LinguaStemLlamaForCausalLM(LlamaForCausalLM):
    config_class = LinguaStemLlamaConfig

    def __init__(self, config):
        super().__init__(config)
        for i in config.stem_layers:
            self.model.layers[i].mlp = StemMLP(config)
        self.post_init()

    def forward(self, input_ids=None, **kwargs):
        if input_ids is None:
            raise ValueError("STEM layers look their rows up by token id: pass input_ids, not inputs_embeds")
        for i in self.config.stem_layers:
            self.model.layers[i].mlp.token_ids = input_ids
        return super().forward(input_ids=input_ids, **kwargs)
)PY";

void write_stem_hf_config(const ModelConfig& cfg, nlohmann::json& j) {
  j["architectures"] = {"LinguaStemLlamaForCausalLM"};
  j["stem_layers"] = stem_layers(cfg);
  j["auto_map"] = {{"AutoConfig", "modeling_lingua_stem.LinguaStemLlamaConfig"},
                   {"AutoModelForCausalLM", "modeling_lingua_stem.LinguaStemLlamaForCausalLM"}};
}

void read_stem_hf_config(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  LINGUA_CHECK(j.contains("stem_layers") && j["stem_layers"].is_array(), path,
               ": key 'stem_layers' (the STEM layers, a list) is missing");
  c.ffn = "stem";
  c.stem_layers = j["stem_layers"].get<std::vector<int>>();
}

}  // namespace

// STEM models in a Hugging Face directory: model_type lingua_stem_llama, each STEM layer's table as
// model.layers.{i}.mlp.stem_embedding.weight [vocab, hidden] in place of up_proj, and the modeling
// file above (AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)).
const FfnHfForm* stem_hf_form() {
  static const FfnHfForm form{"stem",
                              "lingua_stem_llama",
                              {{"stem_embedding.weight", "stem_embedding.weight"}},
                              write_stem_hf_config,
                              read_stem_hf_config,
                              {{"modeling_lingua_stem.py", kStemModelingPy}}};
  return &form;
}

}  // namespace lingua
