// TcpComm: ranks are fork()ed processes on a free local port; each checks its results and its exit
// status carries pass/fail (a child that hangs is killed by alarm()).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "lingua/core/error.h"
#include "lingua/dist/tcp_comm.h"

namespace lingua {
namespace {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), len), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// In a child: a failed check throws (gtest assertions do not cross fork()).
void check(bool ok, const std::string& what) {
  if (!ok) fail("check failed: ", what);
}

// Runs body(rank) in n forked processes; returns their exit statuses (0: passed). Each child
// prints what failed.
std::vector<int> run_ranks(int n, const std::function<void(int)>& body) {
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(60);  // a hang is a failure, not a stuck test
      int status = 0;
      try {
        body(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "[child rank %d] %s\n", r, e.what());
        status = 1;
      }
      std::fflush(nullptr);
      _exit(status);
    }
    pids.push_back(pid);
  }
  std::vector<int> out;
  for (pid_t pid : pids) {
    int st = 0;
    waitpid(pid, &st, 0);
    out.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Rank r's values for the reductions: not exactly representable sums, so the order shows.
double value(int r, int i) { return 0.1 * (r + 1) + 1e-3 * i + (i % 7) * 1e-17 * (r + 3); }

void all_collectives(int rank, int port) {
  const int n = 3;
  if (rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the others wait for it
  TcpComm comm(rank, n, "127.0.0.1", port, 30);
  check(comm.rank() == rank && comm.size() == n && comm.backend() == "tcp", "rank, size, backend");
  comm.barrier();

  // all_reduce: every rank gets rank 0's combination in rank order, bit for bit.
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::min}) {
    auto x_of = [&](int r, int i) { return value(r, i) * (op != ReduceOp::sum && i % 2 ? -1 : 1); };
    std::vector<double> v(10);
    for (int i = 0; i < 10; ++i) v[i] = x_of(rank, i);
    comm.all_reduce(v.data(), (int64_t)v.size(), op);
    for (int i = 0; i < 10; ++i) {
      double s = x_of(0, i);
      for (int r = 1; r < n; ++r) {
        double x = x_of(r, i);
        s = op == ReduceOp::sum ? s + x : op == ReduceOp::max ? std::max(s, x) : std::min(s, x);
      }
      check(std::memcmp(&s, &v[i], sizeof s) == 0, "all_reduce value " + std::to_string(i));
    }
  }
  check(comm.all_reduce(double(rank + 1), ReduceOp::sum) == 6.0, "scalar all_reduce");
  comm.all_reduce(nullptr, 0, ReduceOp::max);  // nothing to reduce is fine

  // broadcast from rank 0 and from another rank.
  for (int root : {0, 2}) {
    char buf[16] = {};
    std::snprintf(buf, sizeof buf, "from %d at %d", rank, root);
    comm.broadcast(buf, sizeof buf, root);
    char want[16] = {};
    std::snprintf(want, sizeof want, "from %d at %d", root, root);
    check(std::memcmp(buf, want, sizeof buf) == 0, "broadcast from " + std::to_string(root));
  }

  // all_gather of bytes, by rank.
  char mine[4] = {(char)('a' + rank), (char)rank, 'x', (char)(10 * rank)};
  char all[12];
  comm.all_gather(mine, all, sizeof mine);
  for (int r = 0; r < n; ++r)
    check(all[4 * r] == 'a' + r && all[4 * r + 1] == r && all[4 * r + 2] == 'x' && all[4 * r + 3] == 10 * r,
          "all_gather slot " + std::to_string(r));

  // A few MB: CPU gradient tensors go this way in tests.
  std::vector<double> big(1 << 19);  // 4 MB
  for (size_t i = 0; i < big.size(); ++i) big[i] = value(rank, (int)(i % 1000)) + (double)i;
  comm.all_reduce(big.data(), (int64_t)big.size(), ReduceOp::sum);
  for (size_t i = 0; i < big.size(); i += 997) {
    double s = value(0, (int)(i % 1000)) + (double)i;
    for (int r = 1; r < n; ++r) s += value(r, (int)(i % 1000)) + (double)i;
    check(s == big[i], "big all_reduce at " + std::to_string(i));
  }
  std::vector<char> part(3 << 20, (char)(rank + 1)), gathered((size_t)n * part.size());
  comm.all_gather(part.data(), gathered.data(), part.size());
  for (int r = 0; r < n; ++r)
    check(gathered[(size_t)r * part.size()] == r + 1 && gathered[(size_t)(r + 1) * part.size() - 1] == r + 1,
          "big all_gather slot " + std::to_string(r));

  // The helpers over them.
  auto names = comm.all_gather_strings(std::string(rank + 1, 'a' + rank));
  check(names.size() == 3 && names[0] == "a" && names[1] == "bb" && names[2] == "ccc", "all_gather_strings");
  check(comm.broadcast_string(rank == 1 ? "hello" : "", 1) == "hello", "broadcast_string");
  comm.barrier();
}

TEST(TcpComm, EveryCollectiveOnThreeRanks) {
  int port = free_port();
  auto st = run_ranks(3, [&](int r) { all_collectives(r, port); });
  EXPECT_EQ(st, (std::vector<int>{0, 0, 0}));
}

TEST(TcpComm, OneRankNeedsNoNetwork) {
  TcpComm comm(0, 1, "no-such-host.invalid", 1, 1);
  double v[2] = {1.5, -2};
  comm.all_reduce(v, 2, ReduceOp::sum);
  EXPECT_EQ(v[0], 1.5);
  char out[3];
  comm.all_gather("ab", out, 3);
  EXPECT_STREQ(out, "ab");
  comm.barrier();
}

TEST(TcpComm, ConnectTimeoutNamesTheAddress) {
  int port = free_port();  // nobody listens there
  auto t0 = std::chrono::steady_clock::now();
  std::string e = error_of([&] { TcpComm(1, 2, "127.0.0.1", port, 0.5); });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(contains(e, "rank 1 of 2: cannot connect to 127.0.0.1:" + std::to_string(port) +
                              " within 0.5 s: Connection refused"))
      << e;
  EXPECT_LT(s, 5);
}

TEST(TcpComm, RendezvousTimeoutNamesTheMissingRanks) {
  int port = free_port();
  auto st = run_ranks(2, [&](int r) {
    if (r == 0) {
      std::string e = error_of([&] { TcpComm(0, 3, "127.0.0.1", port, 1.5); });
      check(contains(e, "rank 0 of 3: only 1 of 2 other ranks joined on 127.0.0.1:" + std::to_string(port) +
                            " within 1.5 s (missing: rank 2)"),
            e);
    } else {
      // Rank 1 joins, then hears that rank 0 gave up.
      std::string e = error_of([&] { TcpComm(1, 3, "127.0.0.1", port, 10); });
      check(contains(e, "rank 1 of 3: rendezvous with rank 0") && contains(e, "closed the connection"), e);
    }
  });
  EXPECT_EQ(st, (std::vector<int>{0, 0}));
}

TEST(TcpComm, WrongArgumentsAreErrors) {
  EXPECT_TRUE(contains(error_of([] { TcpComm(3, 2, "127.0.0.1", 29500); }), "rank 3 of world size 2"));
  EXPECT_TRUE(contains(error_of([] { TcpComm(0, 2, "127.0.0.1", 70000); }), "master port 70000"));
}

TEST(TcpComm, PeerDyingMidCollectiveIsNamed) {
  int port = free_port();
  auto st = run_ranks(3, [&](int r) {
    TcpComm comm(r, 3, "127.0.0.1", port, 30);
    comm.barrier();
    if (r == 2) _exit(0);  // gone without a word, while the others reduce
    auto t0 = std::chrono::steady_clock::now();
    double v = r;
    std::string e = error_of([&] { comm.all_reduce(&v, 1, ReduceOp::sum); });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    check(s < 5, "the error took " + std::to_string(s) + " s");
    if (r == 0)
      check(contains(e, "rank 0 of 3: all_reduce (collective #1): rank 2 closed the connection"), e);
    else
      check(contains(e, "rank 1 of 3: all_reduce (collective #1) failed on rank 0: rank 0 of 3") &&
                contains(e, "rank 2 closed the connection"),
            e);
    // The communicator is unusable from then on, rather than out of step.
    check(contains(error_of([&] { comm.barrier(); }), "failed earlier"), "barrier after the error");
  });
  EXPECT_EQ(st, (std::vector<int>{0, 0, 0}));
}

TEST(TcpComm, MismatchedCollectivesAreNamed) {
  int port = free_port();
  auto st = run_ranks(2, [&](int r) {
    TcpComm comm(r, 2, "127.0.0.1", port, 30);
    std::string e;
    if (r == 0) {
      double v = 1;
      e = error_of([&] { comm.all_reduce(&v, 1, ReduceOp::sum); });
      check(contains(e, "rank 1 called barrier") && contains(e, "rank 0 called all_reduce"), e);
    } else {
      e = error_of([&] { comm.barrier(); });
      check(contains(e, "failed on rank 0") && contains(e, "rank 1 called barrier"), e);
    }
  });
  EXPECT_EQ(st, (std::vector<int>{0, 0}));
}

TEST(TcpComm, RendezvousPortUnderTorchrun) {
  EXPECT_EQ(lingua_rendezvous_port(29500, false), 29500);
  EXPECT_EQ(lingua_rendezvous_port(29500, true), 29501);
}

}  // namespace
}  // namespace lingua
