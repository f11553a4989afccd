#pragma once
// Preemption: while a StopSignals lives, SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 (SLURM sends one of
// these ahead of a time limit with `--signal`) ask the run to stop: the trainer finishes the current
// step, writes a checkpoint, says so and exits with kExitStoppedBySignal, on which a job script can
// requeue. A second SIGINT (Ctrl-C again, 100 ms or more after the first) ends the process at once;
// repeated SIGTERM/SIGUSR1/SIGUSR2 (a scheduler may signal a whole process group) change nothing.
namespace lingua {

// The exit status of `lingua train` after a stop asked by a signal (EX_TEMPFAIL: "try again").
inline constexpr int kExitStoppedBySignal = 75;

class StopSignals {
 public:
  StopSignals();   // installs the handlers; one instance at a time
  ~StopSignals();  // restores the handlers that were there before
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal that asked to stop, 0 when none has.
  int requested() const;
};

const char* signal_name(int sig);  // "SIGTERM", ...

}  // namespace lingua
