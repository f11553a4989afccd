#include "lingua/train/stop_signals.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <ctime>

#include "lingua/core/error.h"

namespace lingua {

namespace {

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
std::atomic<int> g_requested{0};
std::atomic<bool> g_installed{false};
struct sigaction g_previous[4];

std::atomic<int64_t> g_first_ns{0};  // when the stop was asked (CLOCK_MONOTONIC)

int64_t now_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

void on_signal(int sig) {
  // A second SIGINT stops at once, unless it comes within 100 ms of the first: one kill of a
  // process group (timeout(1), a job scheduler) can deliver the same signal twice. Repeated
  // SIGTERM/SIGUSR1/SIGUSR2 change nothing: the stop with a checkpoint goes on.
  if (g_requested.load() != 0) {
    if (sig != SIGINT || now_ns() - g_first_ns.load() < 100000000) return;
    // Only async-signal-safe calls here.
    static const char msg[] = "\nlingua: second signal, stopping at once (no checkpoint)\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  int none = 0;
  if (g_requested.compare_exchange_strong(none, sig)) g_first_ns = now_ns();
  static const char msg[] =
      "\nlingua: stop requested: finishing this step, then writing a checkpoint (Ctrl-C again to stop at once)\n";
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
}

}  // namespace

StopSignals::StopSignals() {
  LINGUA_CHECK(!g_installed.exchange(true), "internal error: two StopSignals at once");
  g_requested = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in progress go on
  for (int i = 0; i < 4; ++i) sigaction(kSignals[i], &sa, &g_previous[i]);
}

StopSignals::~StopSignals() {
  for (int i = 0; i < 4; ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
  g_installed = false;
}

int StopSignals::requested() const { return g_requested.load(); }

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "a signal";
  }
}

}  // namespace lingua
