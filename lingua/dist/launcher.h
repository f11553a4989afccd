#pragma once
// The local launcher behind `lingua launch`: starts N processes of one program on this host with
// the torchrun-style environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) that TcpComm and the trainer read, and supervises them:
//   - SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 sent to the launcher are forwarded to every rank (the
//     trainer then stops with a checkpoint, see train/stop_signals.h);
//   - when a rank fails (exits non-zero other than 75, or dies by a signal) the launcher says
//     which, sends SIGTERM to the others, SIGKILL after grace_s, and exits with that rank's status
//     (128 + the signal for a signal);
//   - exit status 75 (stopped by a signal, kExitStoppedBySignal) is not a failure: the ranks stop
//     together, the launcher waits for all of them and exits 75 (when none failed);
//   - all ranks exit 0: the launcher exits 0.
// The ranks stay in the launcher's process group (a scheduler's kill of the group reaches them)
// and get SIGTERM if the launcher itself dies.
// Ownership: launch_local owns the processes it starts and returns only once all have ended.
#include <string>
#include <vector>

namespace lingua {

struct LaunchOptions {
  int nproc = 0;                  // ranks to start (>= 1)
  int master_port = 0;            // 0: a free port of this host
  std::string master_addr = "127.0.0.1";
  std::string logs;               // "" : ranks write to the launcher's stdout/stderr; else DIR/rank_{r:05d}.log
  double grace_s = 10;            // seconds between SIGTERM and SIGKILL when stopping the ranks
  std::string program;            // "" : this executable (/proc/self/exe); tests run /bin/sh
};

// Runs `program args...` nproc times and supervises the ranks; returns the exit status the
// launcher should exit with. Throws lingua::Error when it cannot start them (the ranks already
// started are stopped first).
int launch_local(const LaunchOptions& opt, const std::vector<std::string>& args);

// Parses `lingua launch`'s arguments: leading key=value options (nproc, master_port, logs,
// grace_s), then the command and its arguments, returned in `command`.
LaunchOptions parse_launch_args(const std::vector<std::string>& args, std::vector<std::string>& command);

// A TCP port of this host that nobody listens on now (bound to port 0 and released).
int find_free_port();

}  // namespace lingua
