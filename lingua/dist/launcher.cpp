#include "lingua/dist/launcher.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "lingua/core/error.h"

extern char** environ;

namespace lingua {

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
constexpr int kStopped = 75;  // the trainer's status after a stop asked by a signal (stop_signals.h)

std::string signal_str(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    default: return "signal " + std::to_string(sig);
  }
}

struct Rank {
  pid_t pid = -1;
  bool running = false;
  int status = 0;  // the exit status, or 128 + signal
};

// Everything a child needs, prepared before fork(): after it only async-signal-safe calls.
struct ChildPlan {
  std::vector<std::string> argv_s, env_s;
  std::vector<char*> argv, env;
  std::string exec_error;  // written when execve fails
  int log_fd = -1;
};

std::vector<std::string> rank_environment(const LaunchOptions& opt, int rank) {
  const char* ours[] = {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT=",
                        // Not under torchrun: MASTER_PORT is ours to use (see lingua_rendezvous_port).
                        "TORCHELASTIC_RUN_ID="};
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    bool replaced = false;
    for (const char* p : ours) replaced |= std::strncmp(*e, p, std::strlen(p)) == 0;
    if (!replaced) env.emplace_back(*e);
  }
  env.push_back("RANK=" + std::to_string(rank));
  env.push_back("WORLD_SIZE=" + std::to_string(opt.nproc));
  env.push_back("LOCAL_RANK=" + std::to_string(rank));
  env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(opt.nproc));
  env.push_back("MASTER_ADDR=" + opt.master_addr);
  env.push_back("MASTER_PORT=" + std::to_string(opt.master_port));
  return env;
}

[[noreturn]] void run_child(const ChildPlan& plan, const sigset_t& old_mask, pid_t launcher) {
  // If the launcher dies (even by SIGKILL), the rank is told to stop rather than left running.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != launcher) _exit(1);
  for (int sig : kForwarded) ::signal(sig, SIG_DFL);
  ::signal(SIGCHLD, SIG_DFL);
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  if (plan.log_fd >= 0) {
    dup2(plan.log_fd, STDOUT_FILENO);
    dup2(plan.log_fd, STDERR_FILENO);
  }
  execve(plan.argv[0], plan.argv.data(), plan.env.data());
  const char* why = std::strerror(errno);
  (void)!::write(STDERR_FILENO, plan.exec_error.data(), plan.exec_error.size());
  (void)!::write(STDERR_FILENO, why, std::strlen(why));
  (void)!::write(STDERR_FILENO, "\n", 1);
  _exit(127);
}

// Blocks the signals the launcher handles (it takes them with sigtimedwait) for its lifetime,
// and restores the mask and SIGCHLD's disposition afterwards (tests call launch_local in-process).
class SignalScope {
 public:
  SignalScope() {
    sigemptyset(&set_);
    for (int sig : kForwarded) sigaddset(&set_, sig);
    sigaddset(&set_, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set_, &old_);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, &old_chld_);  // SIG_IGN would reap the ranks for us, losing their status
  }
  ~SignalScope() {
    // Signals still pending (a late duplicate) were meant for the ranks, not for this process.
    timespec zero{0, 0};
    while (sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
    sigaction(SIGCHLD, &old_chld_, nullptr);
    sigprocmask(SIG_SETMASK, &old_, nullptr);
  }
  const sigset_t& set() const { return set_; }
  const sigset_t& old_mask() const { return old_; }

 private:
  sigset_t set_, old_;
  struct sigaction old_chld_ {};
};

void signal_running(std::vector<Rank>& ranks, int sig) {
  for (Rank& r : ranks)
    if (r.running) ::kill(r.pid, sig);
}

}  // namespace

int find_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  LINGUA_CHECK(fd >= 0, "cannot create a socket to find a free port: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), len) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  int err = errno;
  ::close(fd);
  LINGUA_CHECK(ok, "cannot find a free port: ", std::strerror(err));
  return ntohs(a.sin_port);
}

LaunchOptions parse_launch_args(const std::vector<std::string>& args, std::vector<std::string>& command) {
  LaunchOptions opt;
  size_t i = 0;
  auto number = [](const std::string& key, const std::string& v) {
    try {
      size_t used = 0;
      double d = std::stod(v, &used);
      if (used == v.size()) return d;
    } catch (const std::exception&) {
    }
    fail(key, "=", v, " is not a number");
  };
  // Launcher options come first, as key=value; lingua's command names never contain '='.
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    size_t eq = a.find('=');
    if (eq == std::string::npos) break;
    std::string key = a.substr(0, eq), v = a.substr(eq + 1);
    if (key == "nproc") {
      double d = number(key, v);
      LINGUA_CHECK(d >= 1 && d <= 4096 && d == (int)d, "nproc=", v, " must be a whole number >= 1");
      opt.nproc = (int)d;
    } else if (key == "master_port") {
      double d = number(key, v);
      LINGUA_CHECK(d >= 1 && d <= 65535 && d == (int)d, "master_port=", v, " is not a TCP port (1..65535)");
      opt.master_port = (int)d;
    } else if (key == "logs") {
      LINGUA_CHECK(!v.empty(), "logs= needs a directory");
      opt.logs = v;
    } else if (key == "grace_s") {
      opt.grace_s = number(key, v);
      LINGUA_CHECK(opt.grace_s >= 0, "grace_s=", v, " must be >= 0");
    } else {
      fail("unknown option '", a, "' (options: nproc=, master_port=, logs=, grace_s=; then the command)");
    }
  }
  LINGUA_CHECK(opt.nproc >= 1, "nproc=N is required (the number of ranks to start)");
  command.assign(args.begin() + (long)i, args.end());
  LINGUA_CHECK(!command.empty(), "no command to run (e.g. lingua launch nproc=2 train config=...)");
  return opt;
}

int launch_local(const LaunchOptions& opt_in, const std::vector<std::string>& args) {
  LaunchOptions opt = opt_in;
  LINGUA_CHECK(opt.nproc >= 1, "nproc=", opt.nproc, " must be >= 1");
  if (opt.master_port == 0) opt.master_port = find_free_port();
  std::string program = opt.program;
  if (program.empty()) {
    std::error_code ec;
    program = fs::read_symlink("/proc/self/exe", ec).string();
    LINGUA_CHECK(!ec, "cannot find this executable (/proc/self/exe): ", ec.message());
  }
  if (!opt.logs.empty()) {
    std::error_code ec;
    fs::create_directories(opt.logs, ec);
    LINGUA_CHECK(!ec, "cannot create the log directory ", opt.logs, ": ", ec.message());
  }

  // Everything the children need, before the first fork.
  std::vector<ChildPlan> plans(opt.nproc);
  struct LogFds {
    std::vector<ChildPlan>& plans;
    ~LogFds() {
      for (auto& p : plans)
        if (p.log_fd >= 0) ::close(p.log_fd);
    }
  } close_logs{plans};
  for (int r = 0; r < opt.nproc; ++r) {
    ChildPlan& p = plans[r];
    p.argv_s.push_back(program);
    p.argv_s.insert(p.argv_s.end(), args.begin(), args.end());
    p.env_s = rank_environment(opt, r);
    for (auto& s : p.argv_s) p.argv.push_back(s.data());
    p.argv.push_back(nullptr);
    for (auto& s : p.env_s) p.env.push_back(s.data());
    p.env.push_back(nullptr);
    p.exec_error = "lingua launch: rank " + std::to_string(r) + ": cannot run " + program + ": ";
    if (!opt.logs.empty()) {
      char name[32];
      std::snprintf(name, sizeof name, "rank_%05d.log", r);
      std::string path = (fs::path(opt.logs) / name).string();
      // Appended to: a requeued run keeps the earlier attempts' logs.
      p.log_fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      LINGUA_CHECK(p.log_fd >= 0, "cannot open the log file ", path, ": ", std::strerror(errno));
    }
  }

  SignalScope signals;
  std::vector<Rank> ranks(opt.nproc);
  std::fflush(nullptr);  // not twice in the children's output
  const pid_t self = getpid();
  for (int r = 0; r < opt.nproc; ++r) {
    pid_t pid = fork();
    if (pid == 0) run_child(plans[r], signals.old_mask(), self);
    if (pid < 0) {
      int err = errno;
      signal_running(ranks, SIGKILL);
      for (Rank& k : ranks)
        if (k.running) waitpid(k.pid, nullptr, 0);
      fail("cannot start rank ", r, " of ", opt.nproc, ": fork: ", std::strerror(err));
    }
    ranks[r] = {pid, true, 0};
  }

  int failed = -1;         // the first rank that failed
  bool any_stopped = false;
  bool killed = false;
  Clock::time_point kill_at{};
  int running = opt.nproc;
  while (running > 0) {
    // Wake for a signal, or every 100 ms to reap and check the grace period.
    timespec wait{0, 100 * 1000 * 1000};
    siginfo_t info{};
    int sig = sigtimedwait(&signals.set(), &info, &wait);
    // Forwarded as it came. A Ctrl-C reaches the ranks twice (from the terminal to the whole
    // process group, and from here) within milliseconds: StopSignals takes that as one.
    if (sig > 0 && sig != SIGCHLD) signal_running(ranks, sig);
    for (int r = 0; r < opt.nproc; ++r) {
      Rank& k = ranks[r];
      int st = 0;
      if (!k.running || waitpid(k.pid, &st, WNOHANG) != k.pid) continue;
      k.running = false;
      --running;
      k.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      if (WIFEXITED(st) && (k.status == 0 || k.status == kStopped)) {
        any_stopped |= k.status == kStopped;
        continue;
      }
      if (failed >= 0) continue;  // stopping already: the others' ends are ours
      failed = r;
      std::string how = WIFEXITED(st) ? "exited with status " + std::to_string(k.status)
                                      : "was killed by " + signal_str(WTERMSIG(st));
      std::fprintf(stderr, "lingua launch: rank %d (pid %d) %s%s\n", r, (int)k.pid, how.c_str(),
                   running > 0 ? "; stopping the other ranks" : "");
      std::fflush(stderr);
      signal_running(ranks, SIGTERM);
      kill_at = Clock::now() + std::chrono::milliseconds((int64_t)(opt.grace_s * 1000));
    }
    if (failed >= 0 && !killed && running > 0 && Clock::now() >= kill_at) {
      std::fprintf(stderr, "lingua launch: %d rank(s) still running %g s after SIGTERM; sending SIGKILL\n", running,
                   opt.grace_s);
      signal_running(ranks, SIGKILL);
      killed = true;
    }
  }
  if (failed >= 0) return ranks[failed].status;
  return any_stopped ? kStopped : 0;
}

}  // namespace lingua
