#pragma once
// Preemption: while a StopSignals lives, SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 (SLURM sends one of
// these ahead of a time limit with `--signal`) ask the run to stop: the trainer finishes the current
// step, writes a checkpoint, says so and exits with kExitStoppedBySignal, on which a job script can
// requeue. A second SIGINT or SIGTERM ends the process at once (the default action of the signal).
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
