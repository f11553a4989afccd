// lingua stem-edit: knowledge editing of a STEM checkpoint (SPEC §2). Copies (or swaps) the STEM
// table rows of one token with another's, in all or chosen STEM layers, and writes the result as a
// new checkpoint; the original is never written to.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/data/tokenizer.h"
#include "lingua/model/ffn/stem_edit.h"

namespace fs = std::filesystem;

namespace lingua::app {

namespace {

struct StemEditConfig {
  std::string ckpt;            // a checkpoint step directory, or a dump_dir (its newest checkpoint)
  std::string target;          // text of the token whose rows are replaced
  std::string source;          // text of the token whose rows are used
  std::string mode = "copy";   // copy | swap
  std::vector<int> layers;     // STEM layers to edit (empty: all)
  std::string out;             // new checkpoint root
  std::string tokenizer_path;  // override the checkpoint's tokenizer path (sp)
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (uses its newest checkpoint); never written to");
    v("target", target, "text of the token whose STEM rows are replaced (must be exactly one token)");
    v("source", source, "text of the token whose STEM rows are used (must be exactly one token)");
    v.choice("mode", mode, {"copy", "swap"},
             "copy: target gets source's rows (source unchanged); swap: the two exchange their rows");
    v("layers", layers, "STEM layers to edit, e.g. layers='[2, 3]' (default: every STEM layer)");
    v("out", out, "root directory of the new checkpoint (written as OUT/<step>); required");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
  }
};

std::string list_str(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

int stem_edit_main(const Args& args) {
  if (print_help_if_asked<StemEditConfig>(
          args, "lingua stem-edit ckpt=DIR target=TEXT source=TEXT out=DIR [mode=copy|swap] [layers='[1, 2]']"))
    return 0;
  StemEditConfig c = parse_config<StemEditConfig>(args);
  LINGUA_CHECK(!c.ckpt.empty(), "config key 'ckpt' is required (a checkpoint directory or a dump_dir)");
  const StemEditMode mode = parse_stem_edit_mode(c.mode);

  LoadedModel m = load_model(c.ckpt, c.tokenizer_path, "cpu");
  const int64_t step = checkpoint_step(m.checkpoint_dir);
  const std::string out = new_checkpoint_dir(c.ckpt, m.checkpoint_dir, c.out, step);
  const std::string step_dir = fs::weakly_canonical(fs::absolute(m.checkpoint_dir)).string();

  const int32_t target = single_token_id(*m.tokenizer, c.target, "target");
  const int32_t source = single_token_id(*m.tokenizer, c.source, "source");
  const std::vector<int> edited = stem_edit_rows(*m.model, target, source, mode, c.layers);

  nlohmann::json record = {{"source_checkpoint", step_dir},
                           {"step", step},
                           {"target", {{"text", c.target}, {"id", target}}},
                           {"source", {{"text", c.source}, {"id", source}}},
                           {"mode", stem_edit_mode_name(mode)},
                           {"layers", edited}};
  const std::string written =
      save_model_checkpoint(out, step, m.config, *m.model,
                            {{"stem_edit.json", record.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"}});
  std::fprintf(stderr, "lingua stem-edit: %s token %d (\"%s\") %s token %d (\"%s\") in STEM layers %s of %s -> %s\n",
               mode == StemEditMode::copy ? "copied the rows of" : "swapped the rows of", source, c.source.c_str(),
               mode == StemEditMode::copy ? "into" : "with", target, c.target.c_str(), list_str(edited).c_str(),
               step_dir.c_str(), written.c_str());
  return 0;
}

}  // namespace lingua::app

namespace lingua::app {

namespace {

struct StemNearestConfig {
  std::string ckpt;
  std::string token;           // text of one token
  std::vector<int> layers;     // STEM layers to inspect (empty: all)
  int k = 10;
  std::string tokenizer_path;
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "checkpoint step directory, or a dump_dir (uses its newest checkpoint)");
    v("token", token, "text of the token to inspect (must be exactly one token): token=' whale'");
    v("layers", layers, "STEM layers to inspect, e.g. layers='[2, 3]' (default: every STEM layer)");
    v("k", k, "neighbours listed per layer");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
  }
};

}  // namespace

int stem_nearest_main(const Args& args) {
  if (print_help_if_asked<StemNearestConfig>(args, "lingua stem-nearest ckpt=DIR token=TEXT [k=10] [layers='[1, 2]']"))
    return 0;
  const StemNearestConfig c = parse_config<StemNearestConfig>(args);
  LINGUA_CHECK(!c.ckpt.empty(), "config key 'ckpt' is required (a checkpoint directory or a dump_dir)");
  LoadedModel m = load_model(c.ckpt, c.tokenizer_path, "cpu");
  const int32_t id = single_token_id(*m.tokenizer, c.token, "token");
  const std::vector<int> layers = c.layers.empty() ? stem_layers_of(*m.model) : c.layers;
  auto shown = [&](int32_t t) {  // the token's text, quoted and escaped (JSON)
    return nlohmann::json(m.tokenizer->decode({t})).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::printf("STEM rows nearest to token %d %s by cosine similarity (%s)\n", id, shown(id).c_str(),
              m.checkpoint_dir.c_str());
  for (int l : layers) {
    const std::vector<StemNeighbour> near = stem_nearest(*m.model, l, id, c.k);
    std::printf("layer %d:", l);
    for (const StemNeighbour& n : near) std::printf(" %s %.3f", shown(n.id).c_str(), n.cosine);
    std::printf("\n");
  }
  return 0;
}

}  // namespace lingua::app
