// lingua export-dense: writes a checkpoint whose every FFN is a dense SwiGLU (model.ffn=swiglu),
// for tools that only know dense Llama: each layer whose FFN has a dense form (a structured FFN:
// its factors merged, a guide mixed in with the step's alpha) gets that form's w1, w3, w2; every
// other weight is copied by name. Weights and config only (no optimizer state: a new run can start
// from it with checkpoint.init_ckpt_path). The original is never written to.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"

namespace fs = std::filesystem;

namespace lingua::app {

namespace {

struct ExportDenseConfig {
  std::string ckpt;            // a checkpoint step directory, or a dump_dir (its newest checkpoint)
  std::string out;             // new checkpoint root
  std::string tokenizer_path;  // override the checkpoint's tokenizer path (sp)
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (uses its newest checkpoint); never written to");
    v("out", out, "root directory of the dense checkpoint (written as OUT/<step>); required");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
  }
};

}  // namespace

std::unique_ptr<Transformer> dense_copy(const LoadedModel& m, TrainConfig* dense_cfg_out, std::vector<int>* merged) {
  TrainConfig dense_cfg = m.config;
  dense_cfg.model.ffn = "swiglu";
  dense_cfg.model.structured = StructuredFfnConfig{};  // (keys of the FFN variants no longer meant)
  auto dense = std::make_unique<Transformer>(dense_cfg.model, m.model->dims());
  ParamStore& to = dense->params();
  const ParamStore& from = m.model->params();
  std::vector<bool> written((size_t)to.size() + 1, false);
  for (int l = 0; l < m.model->n_layers(); ++l) {
    const FeedForward& ffn = *m.model->block(l).ffn();
    if (std::string(ffn.kind()) == "swiglu") continue;
    const std::optional<DenseSwiGLU> w = ffn.dense_swiglu();
    LINGUA_CHECK(w.has_value(), m.checkpoint_dir, ": layer ", l, "'s FFN (model.ffn=", m.config.model.ffn, ", kind ",
                 ffn.kind(), ") has no dense form (it looks rows up rather than multiplying): it cannot be exported "
                 "as a dense SwiGLU");
    const std::string prefix = "layers." + std::to_string(l) + ".feed_forward.";
    for (auto [name, v] : {std::pair{"w1.weight", &w->w1}, {"w3.weight", &w->w3}, {"w2.weight", &w->w2}}) {
      const int id = to.index(prefix + name);
      LINGUA_ASSERT((int64_t)v->size() == to.info(id).numel);
      to.set_param(id, v->data());
      written[(size_t)id] = true;
    }
    merged->push_back(l);
  }
  for (int id : to.ids()) {
    if (written[(size_t)id]) continue;
    const std::string& name = to.info(id).name;
    const int src = from.find(name);
    LINGUA_CHECK(src >= 0 && from.info(src).shape == to.info(id).shape, m.checkpoint_dir, ": the dense model's ",
                 "parameter '", name, "' has no counterpart of the same shape in the checkpoint");
    to.set_param(id, from.host_param(src).data());
  }
  *dense_cfg_out = dense_cfg;
  return dense;
}

int export_dense_main(const Args& args) {
  if (print_help_if_asked<ExportDenseConfig>(args, "lingua export-dense ckpt=DIR out=DIR")) return 0;
  const ExportDenseConfig c = parse_config<ExportDenseConfig>(args);
  LINGUA_CHECK(!c.ckpt.empty(), "config key 'ckpt' is required (a checkpoint directory or a dump_dir)");
  LoadedModel m = load_model(c.ckpt, c.tokenizer_path, "cpu");
  const int64_t step = checkpoint_step(m.checkpoint_dir);
  const std::string out = new_checkpoint_dir(c.ckpt, m.checkpoint_dir, c.out, step);

  std::vector<int> merged;
  TrainConfig dense_cfg;
  std::unique_ptr<Transformer> dense_model = dense_copy(m, &dense_cfg, &merged);
  const Transformer& dense = *dense_model;
  nlohmann::json record = {{"source_checkpoint", fs::weakly_canonical(fs::absolute(m.checkpoint_dir)).string()},
                           {"step", step},
                           {"source_ffn", m.config.model.ffn},
                           {"merged_layers", merged}};
  const std::string written_dir = save_model_checkpoint(out, step, dense_cfg, dense, {{"export_dense.json", record.dump(1) + "\n"}});
  const ParamCounts pc = dense.param_counts();
  std::fprintf(stderr, "lingua export-dense: %s (model.ffn=%s) -> %s: %zu FFN layers merged to dense SwiGLU, %lld parameters\n",
               m.checkpoint_dir.c_str(), m.config.model.ffn.c_str(), written_dir.c_str(), merged.size(),
               (long long)pc.total);
  return 0;
}

}  // namespace lingua::app
