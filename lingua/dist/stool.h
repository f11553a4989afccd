#pragma once
// `lingua stool`: prepares a run's dump_dir for SLURM and submits it (Meta Lingua's stool).
//   dump_dir/config.yaml     the training config with the command line's overrides applied and
//                            dump_dir set (the job reads only this file: edit it, e.g. steps, and
//                            resubmit)
//   dump_dir/code/lingua     a copy of the running binary (a rebuild does not change the job);
//                            code/git_revision.txt when the build knows its revision
//   dump_dir/submit.slurm    the job script: #SBATCH lines, MASTER_ADDR/MASTER_PORT, then srun of
//                            code/lingua on every task (each task's output in logs/<job>/)
//   dump_dir/logs/           the batch script's own output (logs/<job>.stdout|.stderr: SLURM does
//                            not create directories for it) and logs/<job>/<job>.<task>.stdout|.stderr
// Submitting submit.slurm again resumes the run from the newest complete checkpoint in dump_dir.
// Ownership: plain values; prepare_stool writes the files, run_stool runs sbatch or bash and
// waits for it.
#include <string>
#include <vector>

namespace lingua {

struct StoolOptions {
  std::string config;            // the training YAML (required)
  std::string script = "train";  // the lingua command the job runs: train or bench
  int nodes = 1, ngpu = 8, ncpu = 16;  // nodes, GPUs (= tasks) per node, CPUs per task
  std::string mem, partition, qos, account, constraint;  // "" : no #SBATCH line
  int time = -1;                 // minutes; -1: no limit line
  bool exclusive = false;
  bool dirs_exists_ok = false;   // reuse a dump_dir that is not empty (a relaunch with new code/config)
  std::string launcher = "sbatch";  // sbatch | bash
  std::string dump_dir;          // "" : the config's dump_dir
  std::vector<std::string> overrides;  // key=value for the config (model.dim=512, steps=100, ...)
};

// Parses `lingua stool`'s key=value arguments; keys that are not stool's are config overrides.
StoolOptions parse_stool_args(const std::vector<std::string>& args);

// What prepare_stool decided; the inputs of the script text.
struct StoolJob {
  std::string dump_dir;     // absolute
  std::string job_name;     // the config's name, else dump_dir's last component
  std::string binary;       // dump_dir/code/lingua
  std::string config_path;  // dump_dir/config.yaml
  std::string workdir;      // where stool ran: relative paths of the config are relative to it
  std::string script_path;  // dump_dir/submit.slurm
};

// The text of submit.slurm (a bash script).
std::string slurm_script(const StoolOptions& opt, const StoolJob& job);

// Resolves the config (file < overrides < dump_dir), checks dump_dir (an error when it exists and
// is not empty, unless dirs_exists_ok), and writes config.yaml, code/, logs/ and submit.slurm.
// `program`: the binary to copy ("" : /proc/self/exe); `git_revision`: "" when unknown.
StoolJob prepare_stool(const StoolOptions& opt, const std::string& program = "", const std::string& git_revision = "");

// Submits the job: `sbatch submit.slurm` or `bash submit.slurm`; returns its exit status. An error
// naming the missing program when it is not on PATH (the files stay written).
int run_stool(const StoolOptions& opt, const StoolJob& job);

// `s` as one word for bash (single quotes when needed).
std::string shell_quote(const std::string& s);

}  // namespace lingua
