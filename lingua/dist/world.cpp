#include "lingua/dist/world.h"

#include <charconv>
#include <cstdio>
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

// This node's entry of a SLURM tasks-per-node list: "4(x2),3" is 4, 4, 3 tasks on nodes 0, 1, 2.
// 0 when the list cannot be read.
int tasks_on_node(const std::string& list, int node) {
  int n = 0;
  size_t i = 0;
  while (i < list.size()) {
    size_t end = list.find(',', i);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(i, end - i);
    int tasks = 0, repeat = 1;
    if (std::sscanf(item.c_str(), "%d(x%d)", &tasks, &repeat) < 1 || tasks < 1 || repeat < 1) return 0;
    if (node < n + repeat) return tasks;
    n += repeat;
    i = end + 1;
  }
  return 0;
}

// Processes on this node of a SLURM step: the step's layout (srun's), else the job's.
int slurm_local_size(int fallback) {
  const int node = env_int("SLURM_NODEID", 0, 0);
  if (const char* l = env_or("SLURM_STEP_TASKS_PER_NODE"))
    if (int n = tasks_on_node(l, node)) return n;
  if (env_or("SLURM_NTASKS_PER_NODE")) return env_int("SLURM_NTASKS_PER_NODE", 1, 1);
  if (const char* l = env_or("SLURM_TASKS_PER_NODE"))
    if (int n = tasks_on_node(l, node)) return n;
  return fallback;
}

// MASTER_ADDR and MASTER_PORT of a multi-process run, checked; `what` names the launch.
void read_master(DistEnv& e, const std::string& what) {
  const char* addr = env_or("MASTER_ADDR");
  LINGUA_CHECK(addr, what, " but MASTER_ADDR is not set (the host of rank 0)");
  e.master_addr = addr;
  e.master_port = env_int("MASTER_PORT", -1, 1);
  LINGUA_CHECK(e.master_port > 0 && e.master_port < 65536, what, " but MASTER_PORT is not set to a port (1-65535)");
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
    if (e.size > 1) read_master(e, "WORLD_SIZE=" + std::to_string(e.size));
  } else if (std::getenv("SLURM_PROCID") && std::getenv("SLURM_NTASKS")) {
    // A task of srun (SLURM_STEP_NUM_TASKS: the step's size), or the batch script itself, which
    // has SLURM_PROCID=0 and the job's SLURM_NTASKS but is one process.
    e.launcher = "slurm";
    const bool srun_step = env_or("SLURM_STEP_NUM_TASKS") != nullptr;
    const char* size_var = srun_step ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
    e.size = env_int(size_var, 1, 1);
    LINGUA_CHECK(srun_step || e.size == 1, "SLURM_NTASKS=", e.size,
                 " but this process was not started by srun (SLURM_STEP_NUM_TASKS is not set): start the ",
                 e.size, " tasks with srun (as `lingua stool`'s submit.slurm does), or run with --ntasks=1");
    e.rank = env_int("SLURM_PROCID", 0, 0);
    e.local_rank = env_int("SLURM_LOCALID", 0, 0);
    e.local_size = slurm_local_size(e.size);
    if (e.size > 1) {
      if (!env_or("MASTER_ADDR") && started_by_mpi()) {
        e.launcher = "mpi";  // srun --mpi=pmix (or pmi2) without MASTER_ADDR: MPI bootstraps the ranks
      } else {
        read_master(e, std::string(size_var) + "=" + std::to_string(e.size) +
                           " (srun; the job script exports MASTER_ADDR and MASTER_PORT, see `lingua stool`)");
      }
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
    } else if ((env.launcher == "env" || env.launcher == "slurm") && env.size > 1) {
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
