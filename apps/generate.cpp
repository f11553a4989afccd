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
  LINGUA_CHECK(g.temperature >= 0, "config key 'temperature' must be >= 0");
  LINGUA_CHECK(g.top_p > 0 && g.top_p <= 1, "config key 'top_p' must be in (0, 1]");
  LINGUA_CHECK(g.max_gen_len > 0, "config key 'max_gen_len' must be positive");
  LoadedModel m = load_model(g.ckpt, g.tokenizer_path, g.device);
  std::fprintf(stderr, "lingua generate: %s\n", m.checkpoint_dir.c_str());
  SamplingOptions opt{g.temperature, g.top_p, g.top_k, g.max_gen_len, g.until};
  PhiloxStream rng((uint64_t)g.seed, 0x6E6);
  for (auto& p : prompts)
    for (int s = 0; s < g.num_samples; ++s) {
      std::string out = generate_text(*m.exec, *m.tokenizer, p, opt, rng);
      std::printf("=== prompt: %s\n%s%s\n", p.c_str(), p.c_str(), out.c_str());
    }
  return 0;
}

}  // namespace lingua::app
