// lingua export-hf / import-hf: checkpoints to and from Hugging Face Llama directories
// (lingua/checkpoint/hf_export.h has the layout).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/hf_export.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/config/config.h"
#include "lingua/exec/executor.h"
#include "lingua/model/ffn/ffn.h"

namespace fs = std::filesystem;

namespace lingua::app {

namespace {

struct ExportHfConfig {
  std::string ckpt;            // a checkpoint step directory, or a dump_dir (its newest checkpoint)
  std::string out;             // the HF directory to write (must not exist)
  std::string dtype = "float32";
  std::string tokenizer_path;  // override the checkpoint's tokenizer path
  std::string reference_text;  // also write lingua_reference.safetensors: its ids and our logits
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (uses its newest checkpoint); never written to");
    v("out", out, "the Hugging Face directory to write (must not exist); required");
    v.choice("dtype", dtype, {"float32", "bfloat16"}, "weight dtype of model.safetensors (float32 is exact)");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
    v("reference_text", reference_text,
      "also write lingua_reference.safetensors: this text's token ids (input_ids [1, T] I32) and lingua's "
      "float32 CPU logits for them (logits [T, V] F32), to check a loader against (scripts/hf_check.py)");
  }
};

struct ImportHfConfig {
  std::string hf;   // a Hugging Face Llama directory
  std::string out;  // new checkpoint root
  template <class V> void visit(V& v) {
    v("hf", hf, "a Hugging Face Llama directory (config.json, model.safetensors or its index, tokenizer files)");
    v("out", out, "root of the lingua checkpoint to write (OUT/0000000000); its tokenizer file is copied to OUT/");
  }
};

}  // namespace

int export_hf_main(const Args& args) {
  if (print_help_if_asked<ExportHfConfig>(args, "lingua export-hf ckpt=DIR out=DIR [dtype=bfloat16]")) return 0;
  const ExportHfConfig c = parse_config<ExportHfConfig>(args);
  LINGUA_CHECK(!c.ckpt.empty(), "config key 'ckpt' is required (a checkpoint directory or a dump_dir)");
  LINGUA_CHECK(!c.out.empty(), "config key 'out' is required (the Hugging Face directory to write)");
  LoadedModel m = load_model(c.ckpt, c.tokenizer_path, "cpu");
  const std::string ffn = m.config.model.ffn;
  std::vector<int> merged;
  TrainConfig cfg = m.config;
  std::unique_ptr<Transformer> dense;
  const FfnHfForm* form = ffn_hf_form(ffn);  // a variant exported in a form of its own
  if (ffn != "swiglu" && !form) dense = dense_copy(m, &cfg, &merged);
  const Transformer& model = dense ? *dense : *m.model;

  nlohmann::json record = {{"source_checkpoint", fs::weakly_canonical(fs::absolute(m.checkpoint_dir)).string()},
                           {"step", checkpoint_step(m.checkpoint_dir)},
                           {"source_ffn", ffn},
                           {"merged_layers", merged},
                           {"dtype", c.dtype},
                           {"tokenizer", m.config.data.tokenizer.name}};
  if (!c.reference_text.empty()) record["reference_text"] = c.reference_text;
  // The reference: the logits of the model as trained (factors, not the merged copy), so that a
  // loader is checked against what lingua itself computes.
  std::vector<int32_t> ids;
  std::vector<float> logits;
  if (!c.reference_text.empty()) {
    ids = m.tokenizer->encode(c.reference_text, m.config.data.add_bos, false);
    const int T = (int)ids.size(), V = m.model->dims().vocab;
    LINGUA_CHECK(T <= m.model->dims().max_seqlen, "config key 'reference_text': ", T, " tokens, more than the model's ",
                 "context (", m.model->dims().max_seqlen, ")");
    logits.resize((size_t)T * V);
    m.exec->forward_logits(ids.data(), T, logits.data());
  }
  const auto write_extra = [&](const std::string& dir) {
    write_text_file_atomic((fs::path(dir) / "lingua_export.json").string(), record.dump(1) + "\n");
    if (ids.empty()) return;
    const int64_t T = (int64_t)ids.size(), V = m.model->dims().vocab;
    write_safetensors((fs::path(dir) / "lingua_reference.safetensors").string(),
                      {{"input_ids", Tensor(ids.data(), {1, T})}, {"logits", Tensor(logits.data(), {T, V})}});
  };
  write_hf_llama(model, cfg, *m.tokenizer, c.out, c.dtype, write_extra);
  std::fprintf(stderr, "lingua export-hf: %s (model.ffn=%s%s) -> %s (%s%s)\n", m.checkpoint_dir.c_str(), ffn.c_str(),
               merged.empty() ? "" : ", structured FFNs merged to dense", c.out.c_str(), c.dtype.c_str(),
               form ? ("; model_type " + form->model_type + ": load with trust_remote_code=True").c_str() : "");
  return 0;
}

int import_hf_main(const Args& args) {
  if (print_help_if_asked<ImportHfConfig>(args, "lingua import-hf hf=DIR out=DIR")) return 0;
  const ImportHfConfig c = parse_config<ImportHfConfig>(args);
  LINGUA_CHECK(!c.hf.empty(), "config key 'hf' is required (a Hugging Face Llama directory)");
  LINGUA_CHECK(!c.out.empty(), "config key 'out' is required (the root of the checkpoint to write)");
  const fs::path dest = fs::path(c.out) / checkpoint_dir_name(0);
  LINGUA_CHECK(!fs::exists(dest), "config key 'out': ", dest.string(),
               " already exists; remove it or give another 'out' (an existing checkpoint is not overwritten)");
  HfImported im = read_hf_llama(c.hf, c.out);
  for (const std::string& n : im.notes) std::fprintf(stderr, "lingua import-hf: note: %s\n", n.c_str());
  nlohmann::json record = {{"source", fs::weakly_canonical(fs::absolute(c.hf)).string()}};
  const std::string dir = save_model_checkpoint(c.out, 0, im.config, *im.model, {{"import_hf.json", record.dump(1) + "\n"}});
  // The keys of a training config that builds this model: the model section and the tokenizer.
  const nlohmann::json params = nlohmann::json::parse(params_json(im.config, im.model->param_counts()));
  std::string keys;
  for (const auto& [k, v] : params["model"].items())
    if (!v.is_null() && !v.is_object()) keys += " model." + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  const nlohmann::json defaults = nlohmann::json::parse(params_json(TrainConfig{}, {}))["model"];
  for (const auto& [k, v] : params["model"].items())  // (nested sections whose values differ from the defaults)
    if (v.is_object() && v != defaults[k]) {
      for (const auto& [k2, v2] : v.items()) keys += " model." + k + "." + k2 + "=" + v2.dump();
    }
  keys += " data.tokenizer.name=" + im.config.data.tokenizer.name;
  if (!im.config.data.tokenizer.path.empty()) keys += " data.tokenizer.path=" + im.config.data.tokenizer.path;
  std::fprintf(stderr, "lingua import-hf: %s -> %s (%lld parameters)\ncontinue training from it with:\n  "
               "checkpoint.init_ckpt_path=%s %s\n", c.hf.c_str(), dir.c_str(),
               (long long)im.model->param_counts().total, dir.c_str(), keys.c_str());
  return 0;
}

}  // namespace lingua::app
