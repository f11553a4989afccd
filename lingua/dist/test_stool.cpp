// lingua stool without SLURM: its arguments, the job script's #SBATCH lines (present only when
// asked), quoting of paths with spaces and quotes (run by bash, with stand-ins for the binary, srun
// and scontrol), and the dump_dir it prepares or refuses.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "lingua/config/config.h"
#include "lingua/config/train_config.h"
#include "lingua/core/error.h"
#include "lingua/dist/stool.h"

namespace lingua {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lingua_test_stool_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string read(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write(const fs::path& p, const std::string& text, bool exec = false) {
  std::ofstream(p) << text;
  if (exec) fs::permissions(p, fs::perms::owner_all);
}

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

StoolJob job_in(const std::string& dump) {
  StoolJob j;
  j.dump_dir = dump;
  j.job_name = "tiny";
  j.binary = dump + "/code/lingua";
  j.config_path = dump + "/config.yaml";
  j.script_path = dump + "/submit.slurm";
  j.workdir = "/work dir";
  return j;
}

TEST(Stool, ParseArguments) {
  StoolOptions o = parse_stool_args({"config=a.yaml", "nodes=2", "ngpu=4", "ncpu=8", "time=90", "partition=gpu",
                                     "exclusive=true", "steps=100", "model.dim=512", "dump_dir=/d", "launcher=bash",
                                     "name=my run"});
  EXPECT_EQ(o.config, "a.yaml");
  EXPECT_EQ(o.script, "train");
  EXPECT_EQ(o.nodes, 2);
  EXPECT_EQ(o.ngpu, 4);
  EXPECT_EQ(o.ncpu, 8);
  EXPECT_EQ(o.time, 90);
  EXPECT_EQ(o.partition, "gpu");
  EXPECT_TRUE(o.exclusive);
  EXPECT_FALSE(o.dirs_exists_ok);
  EXPECT_EQ(o.dump_dir, "/d");
  EXPECT_EQ(o.launcher, "bash");
  EXPECT_EQ(o.overrides, (std::vector<std::string>{"steps=100", "model.dim=512", "name=my run"}));
  o = parse_stool_args({"config=a.yaml"});
  EXPECT_EQ(o.nodes, 1);
  EXPECT_EQ(o.ngpu, 8);
  EXPECT_EQ(o.ncpu, 16);
  EXPECT_EQ(o.time, -1);
  EXPECT_EQ(o.launcher, "sbatch");

  auto err = [](std::vector<std::string> a) { return error_of([&] { parse_stool_args(a); }); };
  EXPECT_NE(err({"nodes=2"}).find("config=PATH is required"), std::string::npos);
  EXPECT_NE(err({"config=a", "script=generate"}).find("script=generate is not a command that reads a training config"),
            std::string::npos);
  EXPECT_NE(err({"config=a", "launcher=mpirun"}).find("launcher=mpirun is not one of: sbatch, bash"), std::string::npos);
  EXPECT_NE(err({"config=a", "nodes=0"}).find("nodes=0 must be >= 1"), std::string::npos);
  EXPECT_NE(err({"config=a", "ngpu=eight"}).find("ngpu=eight is not a whole number"), std::string::npos);
  EXPECT_NE(err({"config=a", "time=-2"}).find("time=-2 must be >= -1"), std::string::npos);
  EXPECT_NE(err({"config=a", "exclusive=maybe"}).find("exclusive=maybe is not a boolean"), std::string::npos);
  EXPECT_NE(err({"config=a", "train"}).find("argument 'train' is not key=value"), std::string::npos);
  EXPECT_NE(err({"config=a", "partition=a\nb"}).find("partition contains a line break"), std::string::npos);
}

TEST(Stool, ScriptWithDefaults) {
  StoolOptions o = parse_stool_args({"config=a.yaml"});
  const std::string s = slurm_script(o, job_in("/runs/tiny"));
  EXPECT_EQ(s.rfind("#!/bin/bash\n", 0), 0u);
  for (const char* line :
       {"#SBATCH --job-name=tiny", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=8", "#SBATCH --gres=gpu:8",
        "#SBATCH --cpus-per-task=16", "#SBATCH --output=/runs/tiny/logs/%j.stdout",
        "#SBATCH --error=/runs/tiny/logs/%j.stderr", "#SBATCH --signal=USR2@120", "#SBATCH --open-mode=append",
        "  export MASTER_ADDR", "  export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        "  mkdir -p /runs/tiny/logs/\"$SLURM_JOB_ID\"",
        "  srun --output=/runs/tiny/logs/%j/%j.%t.stdout --error=/runs/tiny/logs/%j/%j.%t.stderr \\",
        "    /runs/tiny/code/lingua train config=/runs/tiny/config.yaml", "cd '/work dir' || exit 1"})
    EXPECT_TRUE(has_line(s, line)) << line << "\n" << s;
  for (const char* opt : {"--partition", "--qos", "--account", "--constraint", "--time", "--mem", "--exclusive"})
    EXPECT_EQ(s.find(opt), std::string::npos) << opt;
  EXPECT_NE(s.find("scontrol show hostnames"), std::string::npos);
  EXPECT_NE(s.find("resumes the run from the newest complete checkpoint"), std::string::npos) << s;
}

TEST(Stool, ScriptWithEveryOption) {
  StoolOptions o = parse_stool_args({"config=a.yaml", "script=bench", "nodes=4", "ngpu=2", "ncpu=6", "mem=0",
                                     "partition=learn", "qos=high", "account=lm team", "constraint=h100&ib", "time=0",
                                     "exclusive=true"});
  const std::string s = slurm_script(o, job_in("/runs/tiny"));
  for (const char* line : {"#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=2", "#SBATCH --gres=gpu:2",
                           "#SBATCH --cpus-per-task=6", "#SBATCH --partition=learn", "#SBATCH --qos=high",
                           "#SBATCH --account=\"lm team\"", "#SBATCH --constraint=\"h100&ib\"", "#SBATCH --time=0",
                           "#SBATCH --mem=0", "#SBATCH --exclusive", "    /runs/tiny/code/lingua bench config=/runs/tiny/config.yaml"})
    EXPECT_TRUE(has_line(s, line)) << line << "\n" << s;
  o.time = 1440;
  EXPECT_TRUE(has_line(slurm_script(o, job_in("/r")), "#SBATCH --time=1440"));
}

TEST(Stool, QuotingOfPathsWithSpacesAndQuotes) {
  const fs::path root = temp_dir("quote");
  const std::string dump = (root / "my run's 100% \"dir\"").string();
  fs::create_directories(dump + "/code");
  fs::create_directories(dump + "/logs");
  StoolJob job = job_in(dump);
  job.job_name = "a \"b\" #c";
  job.workdir = root.string();
  StoolOptions o = parse_stool_args({"config=a.yaml", "ngpu=1"});
  const std::string s = slurm_script(o, job);
  // sbatch's reading of #SBATCH lines: quotes group, a backslash escapes, '%' of a path is "%%".
  const std::string esc = root.string() + "/my run's 100%% \\\"dir\\\"";
  EXPECT_TRUE(has_line(s, "#SBATCH --job-name=\"a \\\"b\\\" #c\"")) << s;
  EXPECT_TRUE(has_line(s, "#SBATCH --output=\"" + esc + "/logs/%j.stdout\"")) << s;
  write(job.script_path, s, true);
  // The binary: records its arguments one per line.
  const fs::path out = root / "args";
  write(job.binary, "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > '" + out.string() + "'\n", true);
  const std::string expected_args = "train\nconfig=" + dump + "/config.yaml\n";
  // Without SLURM: the binary runs directly, once.
  const fs::path bin = root / "bin";
  fs::create_directories(bin);
  const std::string bash = "env -u SLURM_JOB_ID -u SLURM_JOB_NODELIST bash " + shell_quote(job.script_path);
  ASSERT_EQ(std::system(bash.c_str()), 0);
  EXPECT_EQ(read(out), expected_args);
  // In a job: srun (a stand-in recording its arguments, then running the command) with the per-task logs.
  fs::remove(out);
  const fs::path srun_args = root / "srun_args";
  write(bin / "srun", "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > '" + srun_args.string() +
                          "'\necho \"$MASTER_ADDR $MASTER_PORT\" >> '" + srun_args.string() +
                          "'\nshift 2\nexec \"$@\"\n", true);
  write(bin / "scontrol", "#!/bin/sh\n[ \"$1 $2 $3\" = 'show hostnames node[1-2]' ] && printf 'node1\\nnode2\\n'\n", true);
  const std::string in_job = "env SLURM_JOB_ID=12345 'SLURM_JOB_NODELIST=node[1-2]' PATH=" + shell_quote(bin.string()) +
                             ":\"$PATH\" bash " + shell_quote(job.script_path);
  ASSERT_EQ(std::system(in_job.c_str()), 0);
  EXPECT_EQ(read(out), expected_args);
  const std::string pat = root.string() + "/my run's 100%% \"dir\"";  // %% in a pattern is the path's %
  EXPECT_EQ(read(srun_args), "--output=" + pat + "/logs/%j/%j.%t.stdout\n--error=" + pat + "/logs/%j/%j.%t.stderr\n" +
                                 dump + "/code/lingua\ntrain\nconfig=" + dump + "/config.yaml\nnode1 " +
                                 std::to_string(20000 + 12345 % 20000) + "\n");
  EXPECT_TRUE(fs::is_directory(dump + "/logs/12345"));
}

// A config file of the defaults with a name and a dump_dir.
fs::path config_file(const fs::path& dir, const std::string& dump_dir) {
  TrainConfig c;
  c.name = "tiny";
  c.dump_dir = dump_dir;
  c.steps = 7;
  const fs::path p = dir / "tiny.yaml";
  write(p, config_to_yaml(c));
  return p;
}

TEST(Stool, PrepareWritesTheDumpDir) {
  const fs::path root = temp_dir("prepare");
  const fs::path prog = root / "fake_lingua";
  write(prog, "#!/bin/sh\necho fake\n", true);
  const fs::path cfg = config_file(root, (root / "from_config").string());
  // dump_dir from the config; overrides applied; the program copied; the revision recorded.
  StoolOptions o = parse_stool_args({"config=" + cfg.string(), "steps=11", "model.dim=96"});
  StoolJob job = prepare_stool(o, prog.string(), "abc123");
  EXPECT_EQ(job.dump_dir, (root / "from_config").string());
  EXPECT_EQ(job.job_name, "tiny");
  TrainConfig back = parse_config<TrainConfig>({"config=" + job.config_path});
  EXPECT_EQ(back.steps, 11);
  EXPECT_EQ(back.model.dim, 96);
  EXPECT_EQ(back.dump_dir, job.dump_dir);
  EXPECT_EQ(read(job.binary), read(prog));
  EXPECT_EQ(::access(job.binary.c_str(), X_OK), 0);
  EXPECT_EQ(read(job.dump_dir + "/code/git_revision.txt"), "abc123\n");
  EXPECT_EQ(read(job.script_path), slurm_script(o, job));
  EXPECT_TRUE(fs::is_directory(job.dump_dir + "/logs"));

  // Not empty now: refused, unless dirs_exists_ok (then rewritten).
  std::string err = error_of([&] { prepare_stool(o, prog.string()); });
  EXPECT_NE(err.find("dump_dir '" + job.dump_dir + "' exists and is not empty"), std::string::npos) << err;
  EXPECT_NE(err.find("dirs_exists_ok=true"), std::string::npos) << err;
  o = parse_stool_args({"config=" + cfg.string(), "steps=12", "dirs_exists_ok=true"});
  prepare_stool(o, prog.string());
  EXPECT_EQ(parse_config<TrainConfig>({"config=" + job.config_path}).steps, 12);
  EXPECT_FALSE(fs::exists(job.dump_dir + "/code/git_revision.txt"));  // this binary's revision is unknown

  // dump_dir= given (relative: made absolute), an existing empty directory is fine; the job name
  // follows the config's name, else the directory's.
  fs::create_directories(root / "empty");
  const fs::path cwd = fs::current_path();
  fs::current_path(root);
  o = parse_stool_args({"config=" + cfg.string(), "dump_dir=empty/", "name="});
  job = prepare_stool(o, prog.string());
  fs::current_path(cwd);
  EXPECT_EQ(job.dump_dir, (root / "empty").string());
  EXPECT_EQ(job.job_name, "empty");
  EXPECT_EQ(job.workdir, root.string());
  EXPECT_FALSE(fs::exists(job.dump_dir + "/code/git_revision.txt"));

  // No dump_dir anywhere; a config error is reported before anything is written.
  const fs::path no_dump = config_file(root / "empty", "");
  err = error_of([&] { prepare_stool(parse_stool_args({"config=" + no_dump.string()}), prog.string()); });
  EXPECT_NE(err.find("no dump_dir: give dump_dir=DIR or set dump_dir in"), std::string::npos) << err;
  err = error_of([&] {
    prepare_stool(parse_stool_args({"config=" + cfg.string(), "dump_dir=" + (root / "bad").string(), "steps=0"}),
                  prog.string());
  });
  EXPECT_NE(err.find("steps"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(root / "bad"));
  err = error_of([&] { prepare_stool(parse_stool_args({"config=" + cfg.string(), "modle.dim=3"}), prog.string()); });
  EXPECT_NE(err.find("modle"), std::string::npos) << err;
}

TEST(Stool, SbatchMissingLeavesTheJobReady) {
  const fs::path root = temp_dir("nosbatch");
  const fs::path prog = root / "fake_lingua";
  write(prog, "#!/bin/sh\n", true);
  const fs::path cfg = config_file(root, (root / "run").string());
  StoolOptions o = parse_stool_args({"config=" + cfg.string()});
  StoolJob job = prepare_stool(o, prog.string());
  const std::string path = std::getenv("PATH");
  setenv("PATH", (root / "nothing").c_str(), 1);
  std::string err = error_of([&] { run_stool(o, job); });
  setenv("PATH", path.c_str(), 1);
  EXPECT_NE(err.find("sbatch is not on PATH"), std::string::npos) << err;
  EXPECT_NE(err.find("sbatch " + job.script_path), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(job.script_path));
  // launcher=bash runs it here (the stand-in binary exits 0).
  o.launcher = "bash";
  EXPECT_EQ(run_stool(o, job), 0);
}

}  // namespace
}  // namespace lingua
