// lingua stool end to end, with stand-ins for SLURM's sbatch (runs the script at once, as job 101,
// 102, ...), srun (one task: SLURM_PROCID=0, SLURM_NTASKS=1, output to its --output/--error
// patterns) and scontrol: a tiny run trains on the CPU, then a relaunch with more steps resumes it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "lingua/config/config.h"
#include "lingua/dist/stool.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

std::string read(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_exec(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  fs::permissions(p, fs::perms::owner_all);
}

// The stand-ins in a directory put first on PATH; sbatch records its arguments in dir/sbatch.log.
fs::path fake_slurm(const fs::path& dir) {
  fs::create_directories(dir);
  write_exec(dir / "sbatch",
             "#!/bin/bash\n"
             "echo \"$@\" >> '" + (dir / "sbatch.log").string() + "'\n"
             "id_file='" + (dir / "last_job").string() + "'\n"
             "job=$(( $(cat \"$id_file\" 2>/dev/null || echo 100) + 1 )); echo $job > \"$id_file\"\n"
             "echo \"Submitted batch job $job\"\n"
             "logs=$(dirname \"$1\")/logs\n"
             "SLURM_JOB_ID=$job SLURM_JOB_NODELIST=localhost SLURM_CPUS_PER_TASK=2 bash \"$1\" "
             ">> \"$logs/$job.stdout\" 2>> \"$logs/$job.stderr\"\n");
  write_exec(dir / "srun",
             "#!/bin/bash\n"
             "for a in \"$1\" \"$2\"; do case $a in --output=*) out=${a#--output=};; --error=*) err=${a#--error=};; esac; done\n"
             "shift 2\n"
             "sub() { local s=${1//%j/$SLURM_JOB_ID}; echo \"${s//%t/0}\"; }\n"
             "SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0 \"$@\" > \"$(sub \"$out\")\" 2> \"$(sub \"$err\")\"\n");
  write_exec(dir / "scontrol", "#!/bin/sh\necho localhost\n");
  return dir;
}

// `command` (sh) with `bin` first on PATH and no SLURM job around; its exit status and output.
std::pair<int, std::string> run_sh(const fs::path& bin, const std::string& command) {
  const std::string path = std::getenv("PATH");
  setenv("PATH", (bin.string() + ":" + path).c_str(), 1);
  unsetenv("SLURM_JOB_ID");
  FILE* p = popen(("(" + command + ") 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  setenv("PATH", path.c_str(), 1);
  return {WEXITSTATUS(rc), out};
}

// `lingua stool <args>` under run_sh.
std::pair<int, std::string> stool(const fs::path& bin, const std::string& args) {
  return run_sh(bin, shell_quote(LINGUA_BINARY) + " stool " + args);
}

fs::path tiny_yaml(const fs::path& dir, const fs::path& data) {
  TrainConfig c = tiny_config(data, dir / "unused_dump");
  const fs::path p = dir / "tiny.yaml";
  std::ofstream(p) << config_to_yaml(c);
  return p;
}

std::vector<int64_t> logged_steps(const fs::path& metrics) {
  std::vector<int64_t> steps;
  for (auto& j : read_jsonl(metrics)) steps.push_back(j["global_step"].get<int64_t>());
  return steps;
}

}  // namespace

TEST(StoolE2E, SubmitTrainAndRelaunchResumes) {
  const fs::path data = make_corpus("stool");
  const fs::path root = temp_dir("stool");
  const fs::path bin = fake_slurm(root / "bin");
  const fs::path dump = root / "runs" / "tiny run";  // a space in the path
  const fs::path cfg = tiny_yaml(root, data);

  auto [rc, out] = stool(bin, "config=" + cfg.string() + " 'dump_dir=" + dump.string() +
                                          "' ngpu=1 ncpu=2 partition=debug time=30 steps=10");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("Submitted batch job 101"), std::string::npos) << out;
  EXPECT_EQ(read(bin / "sbatch.log"), (dump / "submit.slurm").string() + "\n");

  // The dump_dir: config with the overrides, the binary, the script, the logs of job 101.
  TrainConfig back = parse_config<TrainConfig>({"config=" + (dump / "config.yaml").string()});
  EXPECT_EQ(back.steps, 10);
  EXPECT_EQ(back.dump_dir, dump.string());
  EXPECT_EQ(back.name, "tiny");
  EXPECT_TRUE(fs::exists(dump / "code" / "lingua"));
  const std::string script = read(dump / "submit.slurm");
  for (const char* line : {"#SBATCH --job-name=tiny", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:1",
                           "#SBATCH --cpus-per-task=2", "#SBATCH --partition=debug", "#SBATCH --time=30"})
    EXPECT_NE(script.find(std::string(line) + "\n"), std::string::npos) << line;
  const std::string task_err = read(dump / "logs" / "101" / "101.0.stderr");
  EXPECT_TRUE(fs::exists(dump / "logs" / "101" / "101.0.stdout"));
  EXPECT_TRUE(fs::exists(dump / "logs" / "101.stdout"));
  EXPECT_NE(task_err.find("lingua train: done at step 10"), std::string::npos) << task_err << read(dump / "logs/101.stderr");
  EXPECT_EQ(logged_steps(dump / "metrics.jsonl"), (std::vector<int64_t>{1, 5, 10}));

  // Relaunch with more steps (config.yaml edited, the same script submitted again): resumes at 10.
  back.steps = 20;
  std::ofstream(dump / "config.yaml") << config_to_yaml(back);
  std::tie(rc, out) = run_sh(bin, "sbatch " + shell_quote((dump / "submit.slurm").string()));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("Submitted batch job 102"), std::string::npos) << out;
  const std::string err2 = read(dump / "logs" / "102" / "102.0.stderr");
  EXPECT_NE(err2.find("lingua: resumed from"), std::string::npos) << err2;
  EXPECT_NE(err2.find("(step 10)"), std::string::npos) << err2;
  EXPECT_NE(err2.find("lingua train: done at step 20"), std::string::npos) << err2;
  EXPECT_EQ(logged_steps(dump / "metrics.jsonl"), (std::vector<int64_t>{1, 5, 10, 11, 15, 20}));  // 11: the first step of the resumed run

  // stool again on the same dump_dir: refused, unless dirs_exists_ok.
  std::tie(rc, out) = stool(bin, "config=" + cfg.string() + " 'dump_dir=" + dump.string() + "' ngpu=1");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("exists and is not empty"), std::string::npos) << out;
  std::tie(rc, out) = stool(bin, "config=" + cfg.string() + " 'dump_dir=" + dump.string() +
                                             "' ngpu=1 dirs_exists_ok=true steps=25");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(read(dump / "logs" / "103" / "103.0.stderr").find("done at step 25"), std::string::npos);
}

TEST(StoolE2E, BashLauncherWithoutSlurmRunsOneProcess) {
  const fs::path data = make_corpus("stool_bash");
  const fs::path root = temp_dir("stool_bash");
  const fs::path empty_bin = root / "no_slurm";  // nothing of SLURM on PATH
  fs::create_directories(empty_bin);
  const fs::path dump = root / "run";
  auto [rc, out] = stool(empty_bin, "config=" + tiny_yaml(root, data).string() + " dump_dir=" +
                                                dump.string() + " launcher=bash steps=5");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("lingua train: done at step 5"), std::string::npos) << out;
  EXPECT_EQ(logged_steps(dump / "metrics.jsonl"), (std::vector<int64_t>{1, 5}));
  // launcher=sbatch here: the files are written, and the error says how to submit them.
  if (run_sh(empty_bin, "command -v sbatch").first == 0) GTEST_SKIP() << "this machine has sbatch";
  std::tie(rc, out) = stool(empty_bin, "config=" + tiny_yaml(root, data).string() + " dump_dir=" +
                                                   (root / "run2").string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("sbatch is not on PATH"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(root / "run2" / "submit.slurm"));
}
