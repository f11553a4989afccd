#pragma once
// TcpComm: the host collectives over TCP sockets, for processes started torchrun-style (RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT; `lingua launch` sets the same). No dependency beyond POSIX.
//
// Topology: a star through rank 0. Rank 0 listens on the rendezvous port, every other rank
// connects to it (retrying until the timeout: rank 0 may start later) and says its rank. Each
// collective sends every rank's contribution to rank 0, which combines them in rank order and
// sends the one result back, so every rank gets bit-identical values. Meant for control values
// and CPU tensors of a few MB, not for bandwidth.
//
// Failures never hang: every wait is a poll() bounded by timeout_s. A rank that disconnects is an
// error naming it; rank 0 relays its error to the other ranks before closing, and after any error
// the communicator is broken (every later call fails).
//
// Ownership: the TcpComm owns its sockets and closes them when destroyed.
#include <cstdint>
#include <string>
#include <vector>

#include "lingua/dist/comm.h"

namespace lingua {

class TcpComm final : public Communicator {
 public:
  // Blocks until all `size` ranks have joined (or throws after timeout_s). timeout_s also bounds
  // each wait inside a collective: a rank more than timeout_s late to a collective is an error.
  TcpComm(int rank, int size, const std::string& master_addr, int master_port, double timeout_s = 300);
  ~TcpComm() override;
  TcpComm(const TcpComm&) = delete;
  TcpComm& operator=(const TcpComm&) = delete;

  std::string backend() const override { return "tcp"; }
  void barrier() override;
  void broadcast(void* data, size_t bytes, int root) override;
  void all_reduce(double* data, int64_t n, ReduceOp op) override;
  void all_gather(const void* in, void* out, size_t bytes) override;
  using Communicator::all_reduce;

 private:
  struct Header;
  // One collective: `in` (in_bytes) goes to rank 0; rank 0 computes `reply_bytes` from every rank's
  // input with `combine` and sends it back into `out`.
  enum class Op : uint32_t { barrier = 1, broadcast, all_reduce, all_gather };
  void collective(Op op, int64_t arg, const void* in, size_t in_bytes, void* out, size_t reply_bytes);
  void root_collective(const Header& h, const void* in, void* out, size_t reply_bytes);
  void peer_collective(const Header& h, const void* in, void* out, size_t reply_bytes);
  void rendezvous_root(const std::string& addr, int port);
  void rendezvous_peer(const std::string& addr, int port);
  // Closes every socket; later calls fail with `why`.
  void break_with(const std::string& why);
  std::string who() const;  // "rank 1 of 3"

  double timeout_s_;
  std::vector<int> fds_;   // rank 0: fds_[r] = socket to rank r (fds_[0] unused); others: fds_[0]
  uint64_t seq_ = 0;       // collectives so far: all ranks must call them in the same order
  std::string broken_;     // why the communicator can no longer be used ("" while it can)
};

// The port TcpComm listens on for a run whose MASTER_PORT is `master_port`. Under torchrun
// (torchelastic: the environment has TORCHELASTIC_RUN_ID) MASTER_PORT is taken by torchrun's own
// TCP store on rank 0's host, so TcpComm uses the next port, master_port + 1; elsewhere (`lingua
// launch`, a job script) it uses master_port itself.
int lingua_rendezvous_port(int master_port, bool under_torchelastic);

}  // namespace lingua
