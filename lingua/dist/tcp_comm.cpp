#include "lingua/dist/tcp_comm.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "lingua/core/error.h"

namespace lingua {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kMagic = 0x4c475443;  // "LGTC"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kReplyOk = 0, kReplyError = 0xffffffffu;
constexpr double kHelloTimeoutS = 10;  // a connection that says nothing this long is not one of ours

// First message of a rank to rank 0, and rank 0's answer once every rank has joined.
struct Hello {
  uint32_t magic, version;
  int32_t rank, size;
};

Clock::time_point deadline_after(double s) {
  // Clamp: a huge timeout must not overflow the clock.
  return Clock::now() + std::chrono::milliseconds((int64_t)(std::min(s, 1e9) * 1000));
}

int ms_until(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return (int)std::clamp<int64_t>(ms, 0, 1 << 30);
}

std::string fmt_s(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

// The outcome of moving bytes over a socket.
enum class Io { ok, closed, timeout, error, peer_spoke };
struct IoResult {
  Io status = Io::ok;
  int err = 0;  // errno, for Io::error
};

// Waits until fd has one of `events` (or an error/hang-up) or the deadline passes: the revents, or
// 0 on timeout. Retries on EINTR (the launcher forwards signals: they must not break a wait).
short wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, ms_until(deadline));
    if (n > 0) return p.revents;
    if (n == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;
    }
    if (errno != EINTR) return POLLERR;
  }
}

// Sends all n bytes. With stop_if_readable, returns Io::peer_spoke as soon as the other side has
// sent something: rank 0 answers only after reading everything, so that is its error report.
IoResult send_all(int fd, const void* data, size_t n, Clock::time_point deadline, bool stop_if_readable = false) {
  auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= (size_t)k;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return {errno == EPIPE || errno == ECONNRESET ? Io::closed : Io::error, errno};
    short ev = wait_fd(fd, POLLOUT | (stop_if_readable ? POLLIN : 0), deadline);
    if (ev == 0) return {Io::timeout, 0};
    if (stop_if_readable && (ev & POLLIN)) return {Io::peer_spoke, 0};
  }
  return {};
}

IoResult recv_all(int fd, void* data, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t k = ::recv(fd, p, n, MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= (size_t)k;
      continue;
    }
    if (k == 0) return {Io::closed, 0};
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return {Io::closed, errno};
    if (errno != EAGAIN && errno != EWOULDBLOCK) return {Io::error, errno};
    if (wait_fd(fd, POLLIN, deadline) == 0) return {Io::timeout, 0};
  }
  return {};
}

// What went wrong with `peer` ("rank 2"), as the end of a sentence.
std::string io_problem(IoResult r, const std::string& peer, double timeout_s, bool sending) {
  switch (r.status) {
    case Io::closed:
      return peer + " closed the connection (did it exit or fail?)" +
             (r.err ? std::string(": ") + std::strerror(r.err) : std::string());
    case Io::timeout:
      return (sending ? "could not send to " : "nothing from ") + peer + " within " + fmt_s(timeout_s) + " s";
    case Io::error: return "connection to " + peer + " failed: " + std::strerror(r.err);
    default: return "internal error: unexpected I/O status with " + peer;
  }
}

void set_socket_options(int fd) {
  int one = 1;
  // Collectives are small request/reply exchanges: send each at once.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

const char* op_name(uint32_t op) {
  switch (op) {
    case 1: return "barrier";
    case 2: return "broadcast";
    case 3: return "all_reduce";
    case 4: return "all_gather";
    default: return "an unknown collective";
  }
}

std::string endpoint(const std::string& addr, int port) { return addr + ":" + std::to_string(port); }

}  // namespace

// Every rank's request to rank 0 and rank 0's reply start with one (reply: op is kReplyOk or
// kReplyError, payload the result or the error text).
struct TcpComm::Header {
  uint32_t magic = kMagic, op = 0;
  uint64_t seq = 0;
  int64_t arg = 0;       // broadcast: the root; all_reduce: the ReduceOp
  uint64_t size = 0;     // the collective's size argument in bytes (must agree on every rank)
  uint64_t payload = 0;  // bytes following this header
};

int lingua_rendezvous_port(int master_port, bool under_torchelastic) {
  return under_torchelastic ? master_port + 1 : master_port;
}

TcpComm::TcpComm(int rank, int size, const std::string& master_addr, int master_port, double timeout_s)
    : Communicator(rank, size), timeout_s_(timeout_s) {
  LINGUA_CHECK(size >= 1 && rank >= 0 && rank < size, "tcp communicator: rank ", rank, " of world size ", size,
               " (want 0 <= RANK < WORLD_SIZE)");
  LINGUA_CHECK(master_port > 0 && master_port < 65536, who(), ": master port ", master_port,
               " is not a TCP port (1..65535)");
  LINGUA_CHECK(timeout_s > 0, who(), ": timeout ", timeout_s, " s must be positive");
  LINGUA_CHECK(!master_addr.empty(), who(), ": empty master address (MASTER_ADDR)");
  fds_.assign(rank == 0 ? size : 1, -1);
  if (size == 1) return;
  try {
    if (rank == 0)
      rendezvous_root(master_addr, master_port);
    else
      rendezvous_peer(master_addr, master_port);
  } catch (...) {
    break_with("rendezvous failed");
    throw;
  }
}

TcpComm::~TcpComm() {
  for (int& fd : fds_) close_fd(fd);
}

std::string TcpComm::who() const { return "rank " + std::to_string(rank()) + " of " + std::to_string(size()); }

void TcpComm::break_with(const std::string& why) {
  if (broken_.empty()) broken_ = why;
  for (int& fd : fds_) close_fd(fd);
}

void TcpComm::rendezvous_root(const std::string& addr, int port) {
  const std::string where = endpoint(addr, port);
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  int gai = getaddrinfo(addr.c_str(), nullptr, &hints, &res);
  LINGUA_CHECK(gai == 0, who(), ": cannot resolve master address '", addr, "': ", gai_strerror(gai));
  // Listen on every interface of the address's family, unless it is a loopback address: a host
  // name may resolve to 127.0.1.1 on its own host while the other hosts reach it on another one.
  sockaddr_storage sa{};
  socklen_t len = 0;
  int family = res->ai_family;
  if (family == AF_INET6) {
    sockaddr_in6 a6 = *reinterpret_cast<sockaddr_in6*>(res->ai_addr);
    if (!IN6_IS_ADDR_LOOPBACK(&a6.sin6_addr)) a6.sin6_addr = in6addr_any;
    a6.sin6_port = htons((uint16_t)port);
    std::memcpy(&sa, &a6, len = sizeof a6);
  } else {
    sockaddr_in a4 = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
    if ((ntohl(a4.sin_addr.s_addr) >> 24) != 127) a4.sin_addr.s_addr = htonl(INADDR_ANY);
    a4.sin_port = htons((uint16_t)port);
    std::memcpy(&sa, &a4, len = sizeof a4);
  }
  freeaddrinfo(res);

  int lfd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  LINGUA_CHECK(lfd >= 0, who(), ": cannot create a socket to listen on ", where, ": ", std::strerror(errno));
  struct Closer {
    int& fd;
    ~Closer() { close_fd(fd); }
  } closer{lfd};
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // a previous run's TIME_WAIT is no obstacle
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(lfd, size() + 16) != 0)
    fail(who(), ": cannot listen on ", where, ": ", std::strerror(errno),
         errno == EADDRINUSE ? " (another run on this port? set MASTER_PORT or master_port=)" : "");

  auto deadline = deadline_after(timeout_s_);
  int joined = 0;
  while (joined < size() - 1) {
    short ev = wait_fd(lfd, POLLIN, deadline);
    if (ev == 0) {
      std::string missing;
      for (int r = 1; r < size(); ++r)
        if (fds_[r] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      fail(who(), ": only ", joined, " of ", size() - 1, " other ranks joined on ", where, " within ",
           fmt_s(timeout_s_), " s (missing: rank ", missing, ")");
    }
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;  // the connection went away, or EINTR: keep waiting
    set_socket_options(fd);
    Hello h{};
    IoResult r = recv_all(fd, &h, sizeof h, std::min(deadline, deadline_after(kHelloTimeoutS)));
    if (r.status != Io::ok || h.magic != kMagic) {
      ::close(fd);  // not a lingua rank (a port scan, a stale client): ignore it
      continue;
    }
    if (h.version != kVersion || h.size != size() || h.rank <= 0 || h.rank >= size() || fds_[h.rank] >= 0) {
      ::close(fd);
      if (h.version != kVersion) fail(who(), ": a rank joined on ", where, " with protocol version ", h.version,
                                      " (this build speaks ", kVersion, "): mixed lingua builds?");
      if (h.size != size())
        fail(who(), ": rank ", h.rank, " joined on ", where, " with world size ", h.size, ", rank 0 has ", size());
      if (h.rank <= 0 || h.rank >= size()) fail(who(), ": a process joined on ", where, " as rank ", h.rank);
      fail(who(), ": two processes joined on ", where, " as rank ", h.rank);
    }
    fds_[h.rank] = fd;
    ++joined;
  }
  // Everyone is here: tell them (their constructors return only now, so this is also a barrier).
  for (int r = 1; r < size(); ++r) {
    Hello ack{kMagic, kVersion, r, size()};
    IoResult io = send_all(fds_[r], &ack, sizeof ack, deadline_after(timeout_s_));
    if (io.status != Io::ok) fail(who(), ": rendezvous on ", where, ": ", io_problem(io, "rank " + std::to_string(r), timeout_s_, true));
  }
}

void TcpComm::rendezvous_peer(const std::string& addr, int port) {
  const std::string where = endpoint(addr, port);
  auto deadline = deadline_after(timeout_s_);
  std::string last_error = "no attempt";
  int& fd = fds_[0];
  // Rank 0 may start later than us: retry until the deadline.
  while (fd < 0) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (gai != 0) {
      last_error = std::string("cannot resolve the address: ") + gai_strerror(gai);
    } else {
      for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
        int s = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0) {
          last_error = std::strerror(errno);
          continue;
        }
        int err = 0;
        if (::connect(s, a->ai_addr, a->ai_addrlen) != 0) {
          err = errno;
          if (err == EINPROGRESS || err == EINTR) {
            err = ETIMEDOUT;
            if (wait_fd(s, POLLOUT, deadline) != 0) {
              socklen_t l = sizeof err;
              getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
            }
          }
        }
        if (err == 0) {
          fd = s;
        } else {
          last_error = std::strerror(err);
          ::close(s);
        }
      }
      freeaddrinfo(res);
    }
    if (fd >= 0) break;
    if (Clock::now() >= deadline)
      fail(who(), ": cannot connect to ", where, " within ", fmt_s(timeout_s_), " s: ", last_error);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, ms_until(deadline))));
  }
  set_socket_options(fd);
  Hello h{kMagic, kVersion, rank(), size()};
  IoResult io = send_all(fd, &h, sizeof h, deadline);
  if (io.status == Io::ok) io = recv_all(fd, &h, sizeof h, deadline);
  if (io.status != Io::ok)
    fail(who(), ": rendezvous with rank 0 on ", where, ": ",
         io_problem(io, "rank 0", timeout_s_, false),
         io.status == Io::timeout ? " (are all ranks started?)" : " (see rank 0's error)");
  LINGUA_CHECK(h.magic == kMagic && h.rank == rank() && h.size == size(), who(), ": rendezvous on ", where,
               ": unexpected answer from rank 0 (another program on this port?)");
}

void TcpComm::barrier() { collective(Op::barrier, 0, nullptr, 0, nullptr, 0); }

void TcpComm::broadcast(void* data, size_t bytes, int root) {
  LINGUA_CHECK(root >= 0 && root < size(), who(), ": broadcast from rank ", root, " of ", size());
  // Only the root's bytes travel to rank 0; the header's size still carries `bytes` for the check.
  collective(Op::broadcast, root, data, bytes, data, bytes);
}

void TcpComm::all_reduce(double* data, int64_t n, ReduceOp op) {
  LINGUA_CHECK(n >= 0, who(), ": all_reduce of ", n, " values");
  collective(Op::all_reduce, (int64_t)op, data, n * sizeof(double), data, n * sizeof(double));
}

void TcpComm::all_gather(const void* in, void* out, size_t bytes) {
  collective(Op::all_gather, 0, in, bytes, out, bytes * size());
}

void TcpComm::collective(Op op, int64_t arg, const void* in, size_t in_bytes, void* out, size_t reply_bytes) {
  LINGUA_CHECK(broken_.empty(), who(), ": ", op_name((uint32_t)op),
               " on a tcp communicator that failed earlier (", broken_, ")");
  Header h;
  h.op = (uint32_t)op;
  h.seq = seq_++;
  h.arg = arg;
  h.size = in_bytes;
  // A broadcast's non-root ranks send no data.
  h.payload = (op == Op::broadcast && arg != rank()) ? 0 : in_bytes;
  if (size() == 1) {
    if (out != in && reply_bytes) std::memmove(out, in, reply_bytes);
    return;
  }
  try {
    if (rank() == 0)
      root_collective(h, in, out, reply_bytes);
    else
      peer_collective(h, in, out, reply_bytes);
  } catch (const Error& e) {
    break_with(e.what());
    throw;
  }
}

void TcpComm::root_collective(const Header& h, const void* in, void* out, size_t reply_bytes) {
  const std::string what = std::string(op_name(h.op)) + " (collective #" + std::to_string(h.seq) + ")";
  auto deadline = deadline_after(timeout_s_);
  std::vector<char> result(reply_bytes), incoming;
  try {
    // Our own part first, then every rank's in rank order: the same combination on every run.
    auto op = (Op)h.op;
    if (h.payload) std::memcpy(result.data(), in, h.payload);  // at offset 0: rank 0's slot of an all_gather
    for (int r = 1; r < size(); ++r) {
      const std::string peer = "rank " + std::to_string(r);
      Header ph;
      IoResult io = recv_all(fds_[r], &ph, sizeof ph, deadline);
      if (io.status != Io::ok) fail(who(), ": ", what, ": ", io_problem(io, peer, timeout_s_, false));
      if (ph.magic != kMagic || ph.op != h.op || ph.seq != h.seq || ph.arg != h.arg || ph.size != h.size)
        fail(who(), ": ", what, ": ", peer, " called ", op_name(ph.op), " (collective #", ph.seq, ", argument ",
             ph.arg, ", ", ph.size, " bytes) where rank 0 called ", op_name(h.op), " (argument ", h.arg, ", ", h.size,
             " bytes): every rank must call the same collectives in the same order");
      size_t expect = (op == Op::broadcast && h.arg != r) ? 0 : h.size;
      LINGUA_CHECK(ph.payload == expect, who(), ": ", what, ": ", peer, " sent ", ph.payload, " bytes, expected ",
                   expect);
      char* dst = nullptr;
      if (op == Op::all_gather) {
        dst = result.data() + (size_t)r * h.size;
      } else if (op == Op::broadcast) {
        dst = result.data();
      } else if (op == Op::all_reduce) {
        incoming.resize(ph.payload);
        dst = incoming.data();
      }
      if (ph.payload) {
        io = recv_all(fds_[r], dst, ph.payload, deadline);
        if (io.status != Io::ok) fail(who(), ": ", what, ": ", io_problem(io, peer, timeout_s_, false));
      }
      if (op == Op::all_reduce) {
        auto* acc = reinterpret_cast<double*>(result.data());
        auto* v = reinterpret_cast<const double*>(incoming.data());
        size_t n = ph.payload / sizeof(double);
        switch ((ReduceOp)h.arg) {
          case ReduceOp::sum: for (size_t i = 0; i < n; ++i) acc[i] += v[i]; break;
          case ReduceOp::max: for (size_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], v[i]); break;
          case ReduceOp::min: for (size_t i = 0; i < n; ++i) acc[i] = std::min(acc[i], v[i]); break;
        }
      }
    }
    Header reply;
    reply.op = kReplyOk;
    reply.seq = h.seq;
    reply.payload = reply_bytes;
    for (int r = 1; r < size(); ++r) {
      IoResult io = send_all(fds_[r], &reply, sizeof reply, deadline);
      if (io.status == Io::ok && reply_bytes) io = send_all(fds_[r], result.data(), reply_bytes, deadline);
      if (io.status != Io::ok)
        fail(who(), ": ", what, ": ", io_problem(io, "rank " + std::to_string(r), timeout_s_, true));
    }
    if (reply_bytes) std::memcpy(out, result.data(), reply_bytes);
  } catch (const Error& e) {
    // Tell the other ranks why, so their errors name the cause rather than only "rank 0 left"
    // (best effort, briefly: some of them may be gone too).
    std::string text = e.what();
    Header reply;
    reply.op = kReplyError;
    reply.seq = h.seq;
    reply.payload = text.size();
    auto soon = deadline_after(std::min(timeout_s_, 2.0));
    for (int r = 1; r < size(); ++r)
      if (fds_[r] >= 0 && send_all(fds_[r], &reply, sizeof reply, soon).status == Io::ok)
        send_all(fds_[r], text.data(), text.size(), soon);
    throw;
  }
}

void TcpComm::peer_collective(const Header& h, const void* in, void* out, size_t reply_bytes) {
  const std::string what = std::string(op_name(h.op)) + " (collective #" + std::to_string(h.seq) + ")";
  auto deadline = deadline_after(timeout_s_);
  int fd = fds_[0];
  IoResult io = send_all(fd, &h, sizeof h, deadline, true);
  if (io.status == Io::ok && h.payload) io = send_all(fd, in, h.payload, deadline, true);
  // peer_spoke: rank 0 answered before taking all our data, which it does only to report an error.
  if (io.status != Io::ok && io.status != Io::peer_spoke)
    fail(who(), ": ", what, ": ", io_problem(io, "rank 0", timeout_s_, true));
  Header reply;
  io = recv_all(fd, &reply, sizeof reply, deadline);
  if (io.status != Io::ok) fail(who(), ": ", what, ": ", io_problem(io, "rank 0", timeout_s_, false));
  LINGUA_CHECK(reply.magic == kMagic && reply.seq == h.seq, who(), ": ", what, ": garbled reply from rank 0");
  if (reply.op == kReplyError) {
    std::string text(std::min<uint64_t>(reply.payload, 1 << 16), '\0');
    io = recv_all(fd, text.data(), text.size(), deadline_after(std::min(timeout_s_, 2.0)));
    fail(who(), ": ", what, " failed on rank 0: ", io.status == Io::ok ? text : "(its message was lost)");
  }
  LINGUA_CHECK(reply.op == kReplyOk && reply.payload == reply_bytes, who(), ": ", what,
               ": garbled reply from rank 0 (", reply.payload, " bytes, expected ", reply_bytes, ")");
  if (reply_bytes) {
    io = recv_all(fd, out, reply_bytes, deadline);
    if (io.status != Io::ok) fail(who(), ": ", what, ": ", io_problem(io, "rank 0", timeout_s_, false));
  }
}

}  // namespace lingua
