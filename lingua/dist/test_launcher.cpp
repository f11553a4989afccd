// The local launcher, running /bin/sh ranks: exit statuses, stopping the others on a failure,
// the environment, forwarded signals and per-rank logs.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lingua/core/error.h"
#include "lingua/dist/launcher.h"
#include "lingua/dist/tcp_comm.h"

namespace lingua {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lingua_test_launch_" + std::to_string(getpid())) / name;
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

LaunchOptions sh_options(int nproc) {
  LaunchOptions o;
  o.nproc = nproc;
  o.program = "/bin/sh";
  return o;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool process_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// A line of sh that records the rank's pid in dir/pid_$RANK (atomically: the test polls for it).
std::string record_pid(const fs::path& dir) {
  return "echo $$ > " + dir.string() + "/tmp_$RANK && mv " + dir.string() + "/tmp_$RANK " + dir.string() +
         "/pid_$RANK; ";
}

std::vector<pid_t> read_pids(const fs::path& dir, int n) {
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) pids.push_back(std::stoi(read(dir / ("pid_" + std::to_string(r)))));
  return pids;
}

TEST(Launcher, AllRanksSucceed) {
  EXPECT_EQ(launch_local(sh_options(3), {"-c", "exit 0"}), 0);
}

TEST(Launcher, OneFailureStopsTheOthersAndGivesItsStatus) {
  fs::path dir = temp_dir("fail");
  testing::internal::CaptureStderr();
  auto t0 = Clock::now();
  int st = launch_local(sh_options(3), {"-c", record_pid(dir) + "if [ $RANK = 1 ]; then sleep 0.3; exit 3; fi; exec sleep 100"});
  double s = seconds_since(t0);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(st, 3);
  EXPECT_LT(s, 5);
  auto pids = read_pids(dir, 3);
  EXPECT_NE(err.find("lingua launch: rank 1 (pid " + std::to_string(pids[1]) +
                     ") exited with status 3; stopping the other ranks"),
            std::string::npos)
      << err;
  for (pid_t pid : pids) EXPECT_FALSE(process_exists(pid)) << pid;
}

TEST(Launcher, RankKilledBySignal) {
  testing::internal::CaptureStderr();
  int st = launch_local(sh_options(2), {"-c", "if [ $RANK = 0 ]; then kill -KILL $$; fi; exec sleep 100"});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(st, 128 + SIGKILL);
  EXPECT_NE(err.find("lingua launch: rank 0 (pid "), std::string::npos) << err;
  EXPECT_NE(err.find(") was killed by SIGKILL; stopping the other ranks"), std::string::npos) << err;
}

TEST(Launcher, RankIgnoringSigtermIsKilledAfterTheGracePeriod) {
  fs::path dir = temp_dir("grace");
  LaunchOptions o = sh_options(2);
  o.grace_s = 0.5;
  testing::internal::CaptureStderr();
  auto t0 = Clock::now();
  // Rank 0's sleep inherits the ignored SIGTERM.
  int st = launch_local(o, {"-c", record_pid(dir) + "if [ $RANK = 1 ]; then sleep 0.3; exit 4; fi; trap '' TERM; exec sleep 100"});
  double s = seconds_since(t0);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(st, 4);
  EXPECT_GE(s, 0.7);
  EXPECT_LT(s, 5);
  EXPECT_NE(err.find("1 rank(s) still running 0.5 s after SIGTERM; sending SIGKILL"), std::string::npos) << err;
  for (pid_t pid : read_pids(dir, 2)) EXPECT_FALSE(process_exists(pid)) << pid;
}

TEST(Launcher, EnvironmentOfEachRank) {
  fs::path dir = temp_dir("env");
  setenv("TORCHELASTIC_RUN_ID", "outer", 1);  // not passed on: the ranks are not under torchrun
  setenv("RANK", "99", 1);                      // replaced
  setenv("LINGUA_TEST_KEEP", "kept", 1);        // the rest of the environment is passed on
  std::string script = "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT "
                       "[$TORCHELASTIC_RUN_ID] $LINGUA_TEST_KEEP\" > " + dir.string() + "/env_$RANK";
  LaunchOptions o = sh_options(3);
  o.master_port = 23456;
  EXPECT_EQ(launch_local(o, {"-c", script}), 0);
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(read(dir / ("env_" + std::to_string(r))),
              std::to_string(r) + " 3 " + std::to_string(r) + " 3 127.0.0.1 23456 [] kept\n");
  // Without master_port: a free port, the same for every rank.
  EXPECT_EQ(launch_local(sh_options(2), {"-c", script}), 0);
  std::string e0 = read(dir / "env_0"), e1 = read(dir / "env_1");
  int port = std::stoi(e0.substr(e0.find("127.0.0.1 ") + 10));
  EXPECT_GT(port, 0);
  EXPECT_NE(e1.find(" " + std::to_string(port) + " "), std::string::npos) << e1;
  unsetenv("TORCHELASTIC_RUN_ID");
  unsetenv("RANK");
  unsetenv("LINGUA_TEST_KEEP");
}

TEST(Launcher, SigtermReachesEveryRank) {
  fs::path dir = temp_dir("sigterm");
  std::fflush(nullptr);
  pid_t launcher = fork();
  if (launcher == 0) {
    alarm(30);
    // The ranks stop like the trainer does on a signal: exit 75.
    int st = launch_local(sh_options(3), {"-c", "trap 'exit 75' TERM; " + record_pid(dir) +
                                                   "while true; do sleep 0.05; done"});
    _exit(st);
  }
  auto t0 = Clock::now();
  while (seconds_since(t0) < 10 && !(fs::exists(dir / "pid_0") && fs::exists(dir / "pid_1") && fs::exists(dir / "pid_2")))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(dir / "pid_2"));
  ::kill(launcher, SIGTERM);
  int st = 0;
  waitpid(launcher, &st, 0);
  ASSERT_TRUE(WIFEXITED(st)) << "launcher killed by signal " << WTERMSIG(st);
  EXPECT_EQ(WEXITSTATUS(st), 75);
  for (pid_t pid : read_pids(dir, 3)) EXPECT_FALSE(process_exists(pid)) << pid;
}

TEST(Launcher, LogsPerRank) {
  fs::path dir = temp_dir("logs");
  LaunchOptions o = sh_options(2);
  o.logs = (dir / "logs").string();
  EXPECT_EQ(launch_local(o, {"-c", "echo out $RANK; echo err $RANK >&2"}), 0);
  EXPECT_EQ(read(dir / "logs/rank_00000.log"), "out 0\nerr 0\n");
  EXPECT_EQ(read(dir / "logs/rank_00001.log"), "out 1\nerr 1\n");
  // A second run (a requeue) appends.
  EXPECT_EQ(launch_local(o, {"-c", "echo again $RANK"}), 0);
  EXPECT_EQ(read(dir / "logs/rank_00001.log"), "out 1\nerr 1\nagain 1\n");
}

TEST(Launcher, ProgramThatCannotRun) {
  LaunchOptions o = sh_options(1);
  o.program = "/nonexistent/lingua";
  testing::internal::CaptureStderr();
  int st = launch_local(o, {"train"});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(st, 127);
  EXPECT_NE(err.find("rank 0: cannot run /nonexistent/lingua: No such file or directory"), std::string::npos) << err;
}

// The ranks of the next test: this binary again, meeting over TcpComm through the environment the
// launcher gives them (skipped when not started by it).
TEST(LauncherWorker, TcpRank) {
  if (!getenv("LINGUA_TEST_LAUNCH_WORKER")) GTEST_SKIP() << "run by Launcher.RanksMeetOverTcpComm";
  int rank = std::stoi(getenv("RANK")), size = std::stoi(getenv("WORLD_SIZE"));
  EXPECT_EQ(std::stoi(getenv("LOCAL_RANK")), rank);
  int port = lingua_rendezvous_port(std::stoi(getenv("MASTER_PORT")), getenv("TORCHELASTIC_RUN_ID") != nullptr);
  TcpComm comm(rank, size, getenv("MASTER_ADDR"), port, 30);
  EXPECT_EQ(comm.all_reduce(double(rank + 1), ReduceOp::sum), size * (size + 1) / 2.0);
  EXPECT_EQ(comm.all_reduce(double(rank), ReduceOp::max), size - 1.0);
}

TEST(Launcher, RanksMeetOverTcpComm) {
  setenv("LINGUA_TEST_LAUNCH_WORKER", "1", 1);
  LaunchOptions o;
  o.nproc = 3;  // program "": this executable
  o.logs = (temp_dir("worker") / "logs").string();
  int st = launch_local(o, {"--gtest_filter=LauncherWorker.TcpRank"});
  unsetenv("LINGUA_TEST_LAUNCH_WORKER");
  EXPECT_EQ(st, 0) << read(fs::path(o.logs) / "rank_00000.log") << read(fs::path(o.logs) / "rank_00001.log");
  EXPECT_NE(read(fs::path(o.logs) / "rank_00002.log").find("[  PASSED  ] 1 test"), std::string::npos);
}

std::string parse_error(const std::vector<std::string>& args) {
  std::vector<std::string> cmd;
  try {
    parse_launch_args(args, cmd);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Launcher, ParseArguments) {
  std::vector<std::string> cmd;
  LaunchOptions o = parse_launch_args({"nproc=4", "master_port=29600", "logs=out", "grace_s=2.5", "train",
                                       "config=a.yaml", "steps=3"},
                                      cmd);
  EXPECT_EQ(o.nproc, 4);
  EXPECT_EQ(o.master_port, 29600);
  EXPECT_EQ(o.logs, "out");
  EXPECT_EQ(o.grace_s, 2.5);
  EXPECT_EQ(o.program, "");
  EXPECT_EQ(cmd, (std::vector<std::string>{"train", "config=a.yaml", "steps=3"}));
  o = parse_launch_args({"nproc=2", "eval", "--help"}, cmd);
  EXPECT_EQ(o.master_port, 0);
  EXPECT_EQ(cmd, (std::vector<std::string>{"eval", "--help"}));

  EXPECT_NE(parse_error({"train"}).find("nproc=N is required"), std::string::npos);
  EXPECT_NE(parse_error({"nproc=2"}).find("no command to run"), std::string::npos);
  EXPECT_NE(parse_error({"nproc=0", "train"}).find("nproc=0 must be a whole number >= 1"), std::string::npos);
  EXPECT_NE(parse_error({"nproc=two", "train"}).find("nproc=two is not a number"), std::string::npos);
  EXPECT_NE(parse_error({"nproc=2", "master_port=70000", "train"}).find("master_port=70000 is not a TCP port"),
            std::string::npos);
  EXPECT_NE(parse_error({"nprocs=2", "train"}).find("unknown option 'nprocs=2'"), std::string::npos);
}

}  // namespace
}  // namespace lingua
