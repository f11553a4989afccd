// lingua launch: start N ranks of a lingua command on this host (torchrun-style environment) and
// supervise them; the logic is in lingua/dist/launcher.h.
#include <cstdio>

#include "apps/commands.h"
#include "lingua/dist/launcher.h"

namespace lingua::app {

namespace {

const char* kLaunchUsage =
    "usage: lingua launch nproc=N [master_port=P] [logs=DIR] [grace_s=S] <command> [args ...]\n"
    "\n"
    "Starts N processes of `lingua <command> args...` with RANK, WORLD_SIZE, LOCAL_RANK,\n"
    "LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT set, and supervises them:\n"
    "  nproc=N        ranks to start (required)\n"
    "  master_port=P  the rendezvous port (default: a free port)\n"
    "  logs=DIR       each rank's stdout and stderr go to DIR/rank_00000.log, ... (appended);\n"
    "                 without it every rank writes to this terminal\n"
    "  grace_s=S      seconds between SIGTERM and SIGKILL when stopping the ranks (default 10)\n"
    "SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 are forwarded to every rank. When a rank fails, the\n"
    "others are stopped and the launcher exits with that rank's status (128 + signal if killed);\n"
    "when the ranks stop on a signal (status 75), it exits 75.\n"
    "e.g. lingua launch nproc=2 train config=configs/demo.yaml\n";

}  // namespace

int launch_main(const Args& args) {
  // Only a leading --help is ours: `lingua launch nproc=2 train --help` is train's.
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kLaunchUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> command;
  LaunchOptions opt = parse_launch_args(args, command);
  return launch_local(opt, command);
}

}  // namespace lingua::app
