#include <algorithm>
#include <cstdio>

#include "apps/commands.h"
#include "lingua/config/config.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/generate/generate.h"

namespace lingua::app {

int generate_main(const Args& args) {
  if (print_help_if_asked<GenerateConfig>(args, "lingua generate ckpt=DIR prompt=\"text\" [key=value ...]")) return 0;
  GenerateConfig g = parse_config<GenerateConfig>(args);
  LINGUA_CHECK(!g.ckpt.empty(), "config key 'ckpt' is required (a checkpoint directory or a dump_dir)");
  std::vector<std::string> prompts = g.prompts;
  if (!g.prompt.empty()) prompts.insert(prompts.begin(), g.prompt);
  LINGUA_CHECK(!prompts.empty(), "give a prompt: prompt=\"text\" or prompts='[\"a\", \"b\"]'");
  check_generate_config(g);
  LoadedModel m = load_model(g.ckpt, g.tokenizer_path, g.device, [&](TrainConfig& c) {
    if (g.premerge_max_tokens) c.model.structured.premerge_max_tokens = *g.premerge_max_tokens;
    if (g.modules) c.model.enabled_modules = *g.modules;
  });
  std::fprintf(stderr, "lingua generate: %s\n", m.checkpoint_dir.c_str());
  SamplingOptions opt{g.temperature, g.top_p, g.top_k, g.max_gen_len, g.until, m.config.data.add_bos};
  const int max_seqlen = m.model->dims().max_seqlen;
  // The samples of a prompt decode in step, max_batch at a time; sample s of prompt i draws from
  // its own stream.
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string& p = prompts[i];
    for (int s0 = 0; s0 < g.num_samples; s0 += g.max_batch) {
      std::vector<PhiloxStream> rngs;
      for (int s = s0; s < std::min(g.num_samples, s0 + g.max_batch); ++s)
        rngs.emplace_back((uint64_t)g.seed, (uint32_t)(0x6E6 + i * (size_t)g.num_samples + s));
      for (const Generation& out : generate_samples(*m.exec, *m.tokenizer, p, opt, rngs)) {
        std::printf("=== prompt: %s\n%s%s\n", p.c_str(), p.c_str(), out.text.c_str());
        std::fflush(stdout);  // the note follows its sample
        const std::string note = generation_note(out, g.max_gen_len, max_seqlen);
        if (!note.empty()) std::fprintf(stderr, "%s\n", note.c_str());
      }
    }
  }
  return 0;
}

}  // namespace lingua::app
