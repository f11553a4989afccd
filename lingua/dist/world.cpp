#include "lingua/dist/world.h"

#include <charconv>
#include <cstdlib>
#include <mutex>

#include "lingua/core/cuda.h"
#include "lingua/dist/mpi_comm.h"
#include "lingua/dist/nccl_comm.h"
#include "lingua/dist/tcp_comm.h"

namespace lingua {

namespace {

const char* env_or(const char* name, const char* fallback = nullptr) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

int env_int(const char* name, int fallback, int lo) {
  const char* v = env_or(name);
  if (!v) return fallback;
  int x = 0;
  const char* end = v + std::char_traits<char>::length(v);
  auto [p, ec] = std::from_chars(v, end, x);
  LINGUA_CHECK(ec == std::errc() && p == end && x >= lo, "environment variable ", name, "='", v,
               "' is not an integer >= ", lo);
  return x;
}

}  // namespace

DistEnv detect_dist_env() {
  DistEnv e;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "mpi";
    e.size = env_int("OMPI_COMM_WORLD_SIZE", 1, 1);
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0, 0);
    e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0, 0);
    e.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1, 1);
  } else if (std::getenv("WORLD_SIZE")) {
    e.launcher = "env";
    e.size = env_int("WORLD_SIZE", 1, 1);
    e.rank = env_int("RANK", -1, 0);
    LINGUA_CHECK(e.rank >= 0, "WORLD_SIZE is set but RANK is not (torchrun-style launch needs both)");
    e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
    e.local_size = env_int("LOCAL_WORLD_SIZE", e.size, 1);
    e.torchelastic = std::getenv("TORCHELASTIC_RUN_ID") != nullptr;
    if (e.size > 1) {
      const char* addr = env_or("MASTER_ADDR");
      LINGUA_CHECK(addr, "WORLD_SIZE=", e.size, " but MASTER_ADDR is not set (the host of rank 0)");
      e.master_addr = addr;
      e.master_port = env_int("MASTER_PORT", -1, 1);
      LINGUA_CHECK(e.master_port > 0 && e.master_port < 65536, "WORLD_SIZE=", e.size,
                   " but MASTER_PORT is not set to a port (1-65535)");
    }
  } else if (started_by_mpi()) {
    e.launcher = "mpi";  // PMIx / PMI without Open MPI's variables: MPI tells the ranks
    e.size = -1;
  }
  if (e.size > 0)
    LINGUA_CHECK(e.rank < e.size && e.local_rank < e.local_size, "rank ", e.rank, " (local ", e.local_rank,
                 ") out of range for world size ", e.size, " (local ", e.local_size, ")");
  return e;
}

World::World(const DistEnv& env, std::unique_ptr<Communicator> host) : env_(env), host_(std::move(host)) {
  env_.rank = host_->rank();
  env_.size = host_->size();
}

World::~World() = default;

Communicator& World::tensors(Device device) {
  if (device == Device::cpu || size() == 1) return *host_;
  if (!nccl_) nccl_ = make_nccl_comm(*host_);
  return *nccl_;
}

World& process_world() {
  static std::unique_ptr<World> world;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (!world) {
    DistEnv env = detect_dist_env();
    std::unique_ptr<Communicator> host;
    if (env.launcher == "mpi") {
      host = MpiComm::world();
    } else if (env.launcher == "env" && env.size > 1) {
      // A rank may wait long in a collective while rank 0 writes a checkpoint or validates: 30
      // minutes, as torch.distributed's default.
      host = std::make_unique<TcpComm>(env.rank, env.size, env.master_addr,
                                       lingua_rendezvous_port(env.master_port, env.torchelastic), 1800.0);
    } else {
      host = std::make_unique<LocalComm>();
    }
    world = std::make_unique<World>(env, std::move(host));
  }
  return *world;
}

void select_local_gpu(const World& world) {
  const int n = cuda_device_count();
  LINGUA_CHECK(n > 0, "no CUDA device available");
  const DistEnv& e = world.env();
  if (world.size() == 1) return;  // the default device (CUDA_VISIBLE_DEVICES picks it)
  LINGUA_CHECK(e.local_size <= n || n == 1, e.local_size, " processes on this node but ", n,
               " GPUs visible: start one process per GPU");
  // A launcher that gives each process one visible GPU (CUDA_VISIBLE_DEVICES per rank) leaves n == 1.
  cuda_set_device(n == 1 ? 0 : e.local_rank % n);
}

}  // namespace lingua
