#pragma once
// One function per `lingua` command; each takes the arguments after the command name.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"

namespace lingua::app {

using Args = std::vector<std::string>;
int train_main(const Args& args);
int generate_main(const Args& args);
int eval_main(const Args& args);
int prepare_main(const Args& args);
int bench_main(const Args& args);
int stem_edit_main(const Args& args);
int stem_nearest_main(const Args& args);
int launch_main(const Args& args);
int stool_main(const Args& args);
int consolidate_main(const Args& args);
int export_dense_main(const Args& args);
int plot_main(const Args& args);
int modules_main(const Args& args);
int grow_main(const Args& args);
int export_hf_main(const Args& args);
int import_hf_main(const Args& args);
// The metrics objects of a dump dir's metrics.jsonl or metrics.eval.jsonl (those with a
// global_step; a torn or foreign line is left out); none when the file is missing.
std::vector<nlohmann::json> read_metric_lines(const std::string& path);
// Writes the HTML page of charts of the dump dirs (lingua plot) to out_path (default:
// <first dump dir>/plots.html) through a temporary file; returns its path.
std::string write_plot(const std::vector<std::string>& dump_dirs, const std::string& out_path, const std::string& title,
                       const std::string& x_axis = "step",  // step | tokens | flops
                       const std::vector<std::string>& keys = {});  // only these charts (default: all)

// The root a command that derives a new checkpoint (step `step`) from the one in `checkpoint_dir`
// (given as `given`: a step directory or a dump_dir) writes it under: `out`, which must not be
// the original's directory, root or inside it, nor hold that step already. Errors name key 'out'.
std::string new_checkpoint_dir(const std::string& given, const std::string& checkpoint_dir, const std::string& out,
                               int64_t step);

// A copy of m's model with every FFN that has a dense form (a structured FFN: its factors merged,
// a guide mixed in at the current alpha) as a dense SwiGLU, and its config (model.ffn=swiglu) in
// *dense_cfg; `merged` gets the layers merged. A model with no structured FFN is copied as is.
std::unique_ptr<Transformer> dense_copy(const LoadedModel& m, TrainConfig* dense_cfg, std::vector<int>* merged);

// True when args ask for help (--help or -h).
bool wants_help(const Args& args);

// Prints a command's usage line and every key of its config C (default and description) when the
// arguments ask for help; returns whether it did.
template <class C>
bool print_help_if_asked(const Args& args, const char* usage) {
  if (!wants_help(args)) return false;
  std::printf("usage: %s\n\nkeys (default, description):\n%s", usage, config_help<C>().c_str());
  return true;
}

}  // namespace lingua::app
