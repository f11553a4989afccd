// lingua: train, evaluate and sample Llama-style models from YAML configs.
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>

#include "apps/commands.h"
#include "lingua/core/error.h"

namespace {

const char* kUsage =
    "usage: lingua <command> [config=path.yaml] [key.sub=value ...]\n"
    "\n"
    "commands:\n"
    "  train      train a model (resumes from dump_dir's newest checkpoint)\n"
    "  generate   sample text from a checkpoint\n"
    "  eval       validation loss of a checkpoint on its *.val.jsonl data\n"
    "  prepare    turn text or jsonl files into a training corpus (chunks + validation split)\n"
    "  bench      time training steps of a config on random tokens (tokens/s, MFU, memory)\n"
    "  stem-edit  copy or swap one token's STEM rows with another's into a new checkpoint\n"
    "  modules    list, add, remove, rename, enable or disable a checkpoint's module tokens (a new checkpoint)\n"
    "  grow       a larger model from a trained smaller one (G_stack, G_zero), or PRTS's growth plan\n"
    "  stem-nearest  the tokens whose STEM rows are nearest to a token's (cosine), per STEM layer\n"
    "  launch     run a command on N local ranks: lingua launch nproc=N <command> [args ...]\n"
    "  stool      prepare a dump_dir for SLURM and submit it: lingua stool config=path.yaml nodes=N ...\n"
    "  consolidate  rewrite a checkpoint saved by several processes (one shard per rank) as single files\n"
    "  export-dense  write a checkpoint with every FFN merged to dense SwiGLU (structured FFNs), for dense-only tools\n"
    "  export-hf  write a checkpoint as a Hugging Face Llama directory (transformers loads it)\n"
    "  import-hf  write a checkpoint from a Hugging Face Llama directory, to continue training from\n"
    "  plot       one HTML page of charts of one or several runs: lingua plot dump_dirs='[a, b]'\n"
    "\n"
    "Settings: built-in defaults < the YAML file given by config= < key=value arguments\n"
    "(values are YAML: model.dim=512, data.sources='{wiki: 0.8, code: 0.2}', prompts='[\"a\", \"b\"]';\n"
    "a text key takes the text after '=' exactly: prompt=\"It was a dark night \").\n"
    "`lingua <command> --help` lists every key of a command with its default.\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace lingua::app;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  Args args(argv + 2, argv + argc);
  try {
    if (cmd == "train") return train_main(args);
    if (cmd == "generate") return generate_main(args);
    if (cmd == "eval") return eval_main(args);
    if (cmd == "prepare") return prepare_main(args);
    if (cmd == "bench") return bench_main(args);
    if (cmd == "stem-edit") return stem_edit_main(args);
    if (cmd == "launch") return launch_main(args);
    if (cmd == "stool") return stool_main(args);
    if (cmd == "consolidate") return consolidate_main(args);
    if (cmd == "stem-nearest") return stem_nearest_main(args);
    if (cmd == "export-dense") return export_dense_main(args);
    if (cmd == "export-hf") return export_hf_main(args);
    if (cmd == "import-hf") return import_hf_main(args);
    if (cmd == "plot") return plot_main(args);
    if (cmd == "modules") return modules_main(args);
    if (cmd == "grow") return grow_main(args);
    std::fprintf(stderr, "lingua: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const lingua::Error& e) {
    std::fprintf(stderr, "lingua %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    // The named limits (validate_config, resolve_dims) catch what a config asks for; this is what
    // is left: the machine ran out while the command ran.
    std::fprintf(stderr,
                 "lingua %s: error: out of memory: an allocation failed (try a smaller model, data.batch_size, "
                 "data.seq_len or data.prefetch_size, or free memory)\n",
                 cmd.c_str());
    return 1;
  } catch (const std::length_error& e) {
    std::fprintf(stderr, "lingua %s: error: out of memory: a buffer larger than the address space was asked for (%s)\n",
                 cmd.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lingua %s: internal error: %s\n", cmd.c_str(), e.what());
    return 3;
  }
}
