#include "lingua/dist/stool.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "lingua/config/config.h"
#include "lingua/config/train_config.h"
#include "lingua/config/validate.h"
#include "lingua/core/error.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

int int_arg(const std::string& key, const std::string& v, int lo) {
  int x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  LINGUA_CHECK(ec == std::errc() && p == v.data() + v.size(), key, "=", v, " is not a whole number");
  LINGUA_CHECK(x >= lo, key, "=", v, " must be >= ", lo);
  return x;
}

bool bool_arg(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no" || v.empty()) return false;
  fail(key, "=", v, " is not a boolean (true or false)");
}

// One word of an #SBATCH line: sbatch groups quoted text and takes a backslash as an escape
// (inside quotes too), and an unquoted '#' starts a comment.
std::string sbatch_quote(const std::string& s) {
  bool plain = !s.empty();
  for (char c : s) plain &= std::isalnum((unsigned char)c) || std::strchr("%@+-=_./:,", c);
  if (plain) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

// A path inside a SLURM filename pattern (--output): '%' is the pattern character ("%%" is '%').
std::string slurm_pattern_path(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '%' ? std::string("%%") : std::string(1, c);
  return out;
}

// What a script line cannot hold: a newline (and NUL) would end it.
void check_one_line(const std::string& what, const std::string& s) {
  LINGUA_CHECK(s.find_first_of("\n\r") == std::string::npos && s.find('\0') == std::string::npos, what,
               " contains a line break: '", s, "'");
}

void write_file_atomic(const fs::path& path, const std::string& text, fs::perms perms) {
  const fs::path tmp = path.string() + ".tmp" + std::to_string(getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    LINGUA_CHECK(f.good(), "cannot write ", tmp.string(), ": ", std::strerror(errno));
  }
  std::error_code ec;
  fs::permissions(tmp, perms, ec);
  if (!ec) fs::rename(tmp, path, ec);
  LINGUA_CHECK(!ec, "cannot write ", path.string(), ": ", ec.message());
}

// Copies the binary through a temporary file and a rename: a running job's binary is replaced,
// not overwritten (which would fail with "text file busy").
void copy_binary(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  if (fs::exists(to) && fs::equivalent(from, to, ec)) return;  // stool run from the copy itself
  const fs::path tmp = to.string() + ".tmp" + std::to_string(getpid());
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  LINGUA_CHECK(!ec, "cannot copy the binary ", from.string(), " to ", tmp.string(), ": ", ec.message());
  fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                           fs::perms::others_exec, ec);
  if (!ec) fs::rename(tmp, to, ec);
  LINGUA_CHECK(!ec, "cannot move the binary into ", to.string(), ": ", ec.message());
}

// `name` found in a directory of PATH ("" when not).
std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string d;
  while (std::getline(dirs, d, ':')) {
    const fs::path p = fs::path(d.empty() ? "." : d) / name;
    if (::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p)) return p.string();
  }
  return "";
}

}  // namespace

std::string shell_quote(const std::string& s) {
  bool plain = !s.empty();
  for (char c : s) plain &= std::isalnum((unsigned char)c) || std::strchr("%@+-=_./:,", c);
  if (plain) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

StoolOptions parse_stool_args(const std::vector<std::string>& args) {
  StoolOptions o;
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    LINGUA_CHECK(eq != std::string::npos && eq > 0, "argument '", a,
                 "' is not key=value (stool's options or config overrides such as steps=100)");
    const std::string k = a.substr(0, eq), v = a.substr(eq + 1);
    if (k == "config") o.config = v;
    else if (k == "script") o.script = v;
    else if (k == "nodes") o.nodes = int_arg(k, v, 1);
    else if (k == "ngpu") o.ngpu = int_arg(k, v, 1);
    else if (k == "ncpu") o.ncpu = int_arg(k, v, 1);
    else if (k == "mem") o.mem = v;
    else if (k == "partition") o.partition = v;
    else if (k == "qos") o.qos = v;
    else if (k == "account") o.account = v;
    else if (k == "constraint") o.constraint = v;
    else if (k == "time") o.time = int_arg(k, v, -1);
    else if (k == "exclusive") o.exclusive = bool_arg(k, v);
    else if (k == "dirs_exists_ok") o.dirs_exists_ok = bool_arg(k, v);
    else if (k == "launcher") o.launcher = v;
    else if (k == "dump_dir") o.dump_dir = v;
    else o.overrides.push_back(a);
  }
  LINGUA_CHECK(!o.config.empty(), "config=PATH is required (the training YAML)");
  LINGUA_CHECK(o.script == "train" || o.script == "bench", "script=", o.script,
               " is not a command that reads a training config (train or bench)");
  LINGUA_CHECK(o.launcher == "sbatch" || o.launcher == "bash", "launcher=", o.launcher,
               " is not one of: sbatch, bash");
  for (auto [what, s] : {std::pair<const char*, const std::string*>{"mem", &o.mem}, {"partition", &o.partition},
                         {"qos", &o.qos}, {"account", &o.account}, {"constraint", &o.constraint},
                         {"dump_dir", &o.dump_dir}, {"config", &o.config}})
    check_one_line(what, *s);
  return o;
}

std::string slurm_script(const StoolOptions& o, const StoolJob& job) {
  const std::string logs = (fs::path(job.dump_dir) / "logs").string();
  std::ostringstream s;
  auto sb = [&](const std::string& opt, const std::string& value) {
    s << "#SBATCH --" << opt;
    if (!value.empty()) s << "=" << sbatch_quote(value);
    s << "\n";
  };
  s << "#!/bin/bash\n";
  s << "# Written by `lingua stool`. Submit with: sbatch " << shell_quote(job.script_path) << "\n";
  sb("job-name", job.job_name);
  sb("nodes", std::to_string(o.nodes));
  sb("ntasks-per-node", std::to_string(o.ngpu));
  sb("gres", "gpu:" + std::to_string(o.ngpu));
  sb("cpus-per-task", std::to_string(o.ncpu));
  if (!o.partition.empty()) sb("partition", o.partition);
  if (!o.qos.empty()) sb("qos", o.qos);
  if (!o.account.empty()) sb("account", o.account);
  if (!o.constraint.empty()) sb("constraint", o.constraint);
  if (o.time >= 0) sb("time", std::to_string(o.time));
  if (!o.mem.empty()) sb("mem", o.mem);
  if (o.exclusive) sb("exclusive", "");
  // SLURM does not create the directory of these files: logs/ exists, logs/<job>/ not yet.
  sb("output", slurm_pattern_path(logs) + "/%j.stdout");
  sb("error", slurm_pattern_path(logs) + "/%j.stderr");
  // The tasks get SIGUSR2 two minutes before the time limit: they stop with a checkpoint (exit 75).
  sb("signal", "USR2@120");
  sb("open-mode", "append");
  const std::string cmd =
      shell_quote(job.binary) + " " + shell_quote(o.script) + " " + shell_quote("config=" + job.config_path);
  s << "\n"
       "# Submitting this script again (after a time limit, a failure, or an edit of config.yaml such\n"
       "# as more steps) resumes the run from the newest complete checkpoint in its dump_dir.\n"
       "set -u\n"
       "# Relative paths of the config (data.root_dir, ...) are relative to where stool ran.\n"
       "cd " << shell_quote(job.workdir) << " || exit 1\n"
       "\n"
       "if [ -n \"${SLURM_JOB_ID:-}\" ] && command -v srun > /dev/null 2>&1; then\n"
       "  # Rank 0's host and a port of this job: the tasks meet there (TCP, see lingua/dist/tcp_comm.h).\n"
       "  MASTER_ADDR=$(scontrol show hostnames \"${SLURM_JOB_NODELIST:-}\" | head -n 1)\n"
       "  export MASTER_ADDR\n"
       "  export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))\n"
       "  # srun does not take sbatch's --cpus-per-task from the job (SLURM >= 22.05).\n"
       "  export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-" << o.ncpu << "}\n"
       "  mkdir -p " << shell_quote(logs) << "/\"$SLURM_JOB_ID\"\n"
       "  srun --output=" << shell_quote(slurm_pattern_path(logs) + "/%j/%j.%t.stdout")
    << " --error=" << shell_quote(slurm_pattern_path(logs) + "/%j/%j.%t.stderr") << " \\\n"
       "    " << cmd << "\n"
       "else\n"
       "  # Not in a SLURM job (launcher=bash): one process, its output here.\n"
       "  " << cmd << "\n"
       "fi\n";
  return s.str();
}

StoolJob prepare_stool(const StoolOptions& o, const std::string& program, const std::string& git_revision) {
  // The config as the job will read it: file < overrides < dump_dir (absolute: the job runs elsewhere).
  std::vector<std::string> args = {"config=" + o.config};
  args.insert(args.end(), o.overrides.begin(), o.overrides.end());
  TrainConfig cfg = parse_config<TrainConfig>(args);
  if (!o.dump_dir.empty()) cfg.dump_dir = o.dump_dir;
  LINGUA_CHECK(!cfg.dump_dir.empty(), "no dump_dir: give dump_dir=DIR or set dump_dir in ", o.config);
  check_one_line("dump_dir", cfg.dump_dir);
  cfg.dump_dir = fs::absolute(cfg.dump_dir).lexically_normal().string();
  while (cfg.dump_dir.size() > 1 && cfg.dump_dir.back() == '/') cfg.dump_dir.pop_back();
  validate_config(cfg);

  StoolJob job;
  job.dump_dir = cfg.dump_dir;
  const fs::path dump(job.dump_dir);
  job.job_name = cfg.name.empty() ? dump.filename().string() : cfg.name;
  check_one_line("the config's name", job.job_name);
  job.binary = (dump / "code" / "lingua").string();
  job.config_path = (dump / "config.yaml").string();
  job.script_path = (dump / "submit.slurm").string();
  job.workdir = fs::current_path().string();
  check_one_line("the working directory", job.workdir);

  std::error_code ec;
  if (fs::exists(dump, ec)) {
    LINGUA_CHECK(fs::is_directory(dump, ec), "dump_dir '", job.dump_dir, "' exists and is not a directory");
    LINGUA_CHECK(o.dirs_exists_ok || fs::is_empty(dump, ec), "dump_dir '", job.dump_dir,
                 "' exists and is not empty (another run's files?). Give another dump_dir, or dirs_exists_ok=true "
                 "to reuse it: config.yaml, code/ and submit.slurm are rewritten and the run resumes from its "
                 "checkpoints");
  }
  for (const fs::path& d : {dump, dump / "code", dump / "logs"}) {
    fs::create_directories(d, ec);
    LINGUA_CHECK(!ec, "cannot create ", d.string(), ": ", ec.message());
  }
  const fs::perms rw = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read;
  write_file_atomic(job.config_path, config_to_yaml(cfg), rw);
  copy_binary(program.empty() ? fs::read_symlink("/proc/self/exe") : fs::path(program), job.binary);
  const fs::path rev = dump / "code" / "git_revision.txt";
  if (!git_revision.empty()) write_file_atomic(rev, git_revision + "\n", rw);
  else fs::remove(rev, ec);  // not an older binary's
  write_file_atomic(job.script_path, slurm_script(o, job), rw | fs::perms::owner_exec);
  return job;
}

int run_stool(const StoolOptions& o, const StoolJob& job) {
  const std::string exe = find_on_path(o.launcher);
  if (exe.empty()) {
    if (o.launcher == "sbatch")
      fail("sbatch is not on PATH (no SLURM here?). The job is ready in ", job.dump_dir,
           ": submit it on a SLURM login node with `sbatch ", shell_quote(job.script_path),
           "`, or run it on this machine with `bash ", shell_quote(job.script_path), "`");
    fail(o.launcher, " is not on PATH");
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  LINGUA_CHECK(pid >= 0, "fork: ", std::strerror(errno));
  if (pid == 0) {
    const char* argv[] = {exe.c_str(), job.script_path.c_str(), nullptr};
    ::execv(exe.c_str(), const_cast<char* const*>(argv));
    std::fprintf(stderr, "lingua stool: cannot run %s: %s\n", exe.c_str(), std::strerror(errno));
    _exit(127);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace lingua
