// detect_dist_env: the launchers' variables (Open MPI, torchrun-style, srun) read with setenv, and
// two srun-style processes meeting over TcpComm through process_world().
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lingua/core/error.h"
#include "lingua/dist/layout.h"
#include "lingua/dist/world.h"

namespace lingua {
namespace {

const char* kVars[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                       "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_RANK", "PMI_RANK", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                       "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                       "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_NODEID",
                       "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE"};

// Clears the launchers' variables for a test and puts the process's own back after it.
class DistEnvTest : public testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kVars) {
      if (const char* x = std::getenv(v)) saved_[v] = x;
      unsetenv(v);
    }
  }
  void TearDown() override {
    for (const char* v : kVars) unsetenv(v);
    for (auto& [k, v] : saved_) setenv(k.c_str(), v.c_str(), 1);
  }
  static void set(const std::map<std::string, std::string>& vars) {
    for (auto& [k, v] : vars) setenv(k.c_str(), v.c_str(), 1);
  }
  static std::string error() {
    try {
      detect_dist_env();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  std::map<std::string, std::string> saved_;
};

TEST_F(DistEnvTest, NothingIsOneProcess) {
  DistEnv e = detect_dist_env();
  EXPECT_EQ(e.launcher, "none");
  EXPECT_EQ(e.size, 1);
  EXPECT_EQ(e.rank, 0);
}

TEST_F(DistEnvTest, SlurmOneTaskNeedsNoMaster) {
  // A one-task sbatch job (its batch script, or srun -n 1): one process, no rendezvous.
  set({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  DistEnv e = detect_dist_env();
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.size, 1);
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.local_size, 1);
  set({{"SLURM_STEP_NUM_TASKS", "1"}, {"SLURM_LOCALID", "0"}});
  EXPECT_EQ(detect_dist_env().size, 1);
}

TEST_F(DistEnvTest, SlurmStepOfTwoNodes) {
  set({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_LOCALID", "1"},
       {"SLURM_NODEID", "1"}, {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"}, {"SLURM_TASKS_PER_NODE", "4(x2)"},
       {"MASTER_ADDR", "node-a"}, {"MASTER_PORT", "29511"}});
  DistEnv e = detect_dist_env();
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.size, 8);
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 4);
  EXPECT_EQ(e.master_addr, "node-a");
  EXPECT_EQ(e.master_port, 29511);
  EXPECT_FALSE(e.torchelastic);
}

TEST_F(DistEnvTest, SlurmStepSizeIsTheStepsNotTheJobs) {
  // srun -n 2 inside a job of 8 tasks.
  set({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "8"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "1"},
       {"SLURM_STEP_TASKS_PER_NODE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29511"}});
  DistEnv e = detect_dist_env();
  EXPECT_EQ(e.size, 2);
  EXPECT_EQ(e.local_size, 2);
}

TEST_F(DistEnvTest, SlurmLocalSize) {
  set({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "6"}, {"SLURM_STEP_NUM_TASKS", "6"}, {"MASTER_ADDR", "h"},
       {"MASTER_PORT", "1234"}});
  EXPECT_EQ(detect_dist_env().local_size, 6);  // nothing about nodes: one node
  set({{"SLURM_TASKS_PER_NODE", "3(x2)"}});
  EXPECT_EQ(detect_dist_env().local_size, 3);
  set({{"SLURM_NTASKS_PER_NODE", "2"}});
  EXPECT_EQ(detect_dist_env().local_size, 2);  // the job's request, over the derived list
  set({{"SLURM_STEP_TASKS_PER_NODE", "4,1(x2)"}, {"SLURM_NODEID", "2"}, {"SLURM_PROCID", "5"}});
  EXPECT_EQ(detect_dist_env().local_size, 1);  // this node's entry of an uneven layout
  set({{"SLURM_NODEID", "0"}, {"SLURM_PROCID", "3"}, {"SLURM_LOCALID", "3"}});
  EXPECT_EQ(detect_dist_env().local_size, 4);
  set({{"SLURM_STEP_TASKS_PER_NODE", "garbage"}, {"SLURM_NTASKS_PER_NODE", ""}, {"SLURM_TASKS_PER_NODE", ""},
       {"SLURM_LOCALID", "0"}});
  EXPECT_EQ(detect_dist_env().local_size, 6);
}

TEST_F(DistEnvTest, SlurmErrors) {
  set({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "1"}});
  std::string err = error();
  EXPECT_NE(err.find("SLURM_STEP_NUM_TASKS=2"), std::string::npos) << err;
  EXPECT_NE(err.find("MASTER_ADDR is not set"), std::string::npos) << err;
  set({{"MASTER_ADDR", "node-a"}});
  err = error();
  EXPECT_NE(err.find("MASTER_PORT is not set"), std::string::npos) << err;
  set({{"MASTER_PORT", "http"}});
  err = error();
  EXPECT_NE(err.find("MASTER_PORT='http'"), std::string::npos) << err;
  set({{"MASTER_PORT", "29500"}, {"SLURM_PROCID", "two"}});
  err = error();
  EXPECT_NE(err.find("SLURM_PROCID='two'"), std::string::npos) << err;
  set({{"SLURM_PROCID", "2"}});
  err = error();
  EXPECT_NE(err.find("rank 2 (local 1) out of range for world size 2"), std::string::npos) << err;
}

TEST_F(DistEnvTest, SlurmBatchScriptOfManyTasksIsRefused) {
  // The batch script of a job of 4 tasks running lingua itself: it would wait for 3 tasks forever.
  set({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"}, {"SLURM_NTASKS_PER_NODE", "4"},
       {"MASTER_ADDR", "node-a"}, {"MASTER_PORT", "29500"}});
  std::string err = error();
  EXPECT_NE(err.find("SLURM_NTASKS=4 but this process was not started by srun"), std::string::npos) << err;
}

TEST_F(DistEnvTest, SlurmUnderPmixWithoutMasterIsMpi) {
  set({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "1"},
       {"PMIX_RANK", "1"}});
  DistEnv e = detect_dist_env();
  EXPECT_EQ(e.launcher, "mpi");
  EXPECT_EQ(e.size, 2);
}

TEST_F(DistEnvTest, OtherLaunchersComeFirst) {
  set({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "h"},
       {"MASTER_PORT", "1234"}});
  DistEnv e = detect_dist_env();  // `lingua launch` or torchrun inside a SLURM job
  EXPECT_EQ(e.launcher, "env");
  EXPECT_EQ(e.size, 2);
  EXPECT_EQ(e.rank, 1);
  set({{"OMPI_COMM_WORLD_SIZE", "3"}, {"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "3"}});
  e = detect_dist_env();  // mpirun inside a SLURM job
  EXPECT_EQ(e.launcher, "mpi");
  EXPECT_EQ(e.size, 3);
  EXPECT_EQ(e.rank, 2);
}

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

TEST_F(DistEnvTest, SrunTasksMeetOverTcp) {
  // Two forked "srun tasks" (this process never made its world, so each child makes its own).
  const int port = free_port();
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(60);
      set({{"SLURM_PROCID", std::to_string(r)}, {"SLURM_LOCALID", std::to_string(r)}, {"SLURM_NTASKS", "2"},
           {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_STEP_TASKS_PER_NODE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
           {"MASTER_PORT", std::to_string(port)}});
      int status = 1;
      try {
        World& w = process_world();
        const double sum = w.host().all_reduce(double(r + 1), ReduceOp::sum);
        status = (w.env().launcher == "slurm" && w.host().backend() == "tcp" && w.rank() == r && w.size() == 2 &&
                  sum == 3.0)
                     ? 0
                     : 2;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "[task %d] %s\n", r, e.what());
      }
      std::fflush(nullptr);
      _exit(status);
    }
    pids.push_back(pid);
  }
  for (int r = 0; r < 2; ++r) {
    int st = 0;
    waitpid(pids[r], &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "task " << r << " status " << st;
  }
}

TEST(ParallelLayout, FromLinguasKeys) {
  DistributedConfig d;
  ParallelLayout l = resolve_parallel_layout(d, 4);  // no_shard: DDP
  EXPECT_FALSE(l.fsdp());
  EXPECT_EQ(l.replicate, 4);
  EXPECT_EQ(l.describe(), "DDP over 4 processes");
  d.fsdp_type = "full_shard";
  d.dp_shard = 4;
  l = resolve_parallel_layout(d, 4);
  EXPECT_TRUE(l.fsdp());
  EXPECT_FALSE(l.hybrid());
  EXPECT_EQ(l.describe(), "FSDP over 4 processes");
  d.dp_shard = 2;  // HSDP: 2 replicas of 2 consecutive ranks
  l = resolve_parallel_layout(d, 4);
  EXPECT_TRUE(l.hybrid());
  EXPECT_EQ(l.replicate, 2);
  EXPECT_EQ(l.describe(), "HSDP over 4 processes (2 replicas x 2 shards)");
  EXPECT_EQ(l.shard_rank(3), 1);
  EXPECT_EQ(l.replica_rank(3), 1);
  EXPECT_EQ(l.replica_rank(1), 0);
  d.dp_shard = 3;  // does not divide
  try {
    resolve_parallel_layout(d, 4);
    ADD_FAILURE() << "dp_shard 3 of 4 processes accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("distributed.dp_shard"), std::string::npos) << e.what();
  }
  d.fsdp_type = "no_shard";
  d.dp_shard = 2;  // sharding without full_shard
  EXPECT_THROW(resolve_parallel_layout(d, 4), Error);
  d.fsdp_type = "full_shard";
  d.dp_shard = 8;  // one process: a note, nothing to divide
  l = resolve_parallel_layout(d, 1);
  EXPECT_FALSE(l.fsdp());
  EXPECT_EQ(l.notes.size(), 1u);
}

TEST(ParallelLayout, TablesAndReductionDtype) {
  DistributedConfig d;
  d.stem_parallel_size = 2;
  d.reduce_dtype = "bf16";
  ParallelLayout l = resolve_parallel_layout(d, 4);
  EXPECT_EQ(l.tables, 2);
  EXPECT_EQ(l.reduce_dtype, DType::bf16);
  EXPECT_EQ(l.describe(), "DDP over 4 processes, per-layer tables split over 2 processes, gradients reduced in bf16");
  d.stem_parallel_size = 3;  // does not divide 4
  try {
    resolve_parallel_layout(d, 4);
    ADD_FAILURE() << "stem_parallel_size 3 of 4 processes accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("distributed.stem_parallel_size"), std::string::npos) << e.what();
  }
  d.stem_parallel_size = 1;
  d.fsdp_type = "full_shard";
  d.dp_shard = 4;  // FSDP reduce-scatters in fp32: bf16 is refused, naming the key
  try {
    resolve_parallel_layout(d, 4);
    ADD_FAILURE() << "bf16 reduction with FSDP accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("distributed.reduce_dtype"), std::string::npos) << e.what();
  }
  d.reduce_dtype = "fp32";
  EXPECT_EQ(resolve_parallel_layout(d, 4).reduce_dtype, DType::f32);
}

}  // namespace
}  // namespace lingua
