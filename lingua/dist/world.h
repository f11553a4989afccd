#pragma once
// The processes of a run and how they talk. One process per GPU (or per CPU worker), started by
//   mpirun                   OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK} (or PMIx): MPI host collectives
//   torchrun, `lingua launch`
//                            RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT: TCP host
//                            collectives (see tcp_comm.h)
//   srun (`lingua stool`'s submit.slurm)
//                            SLURM_PROCID, SLURM_STEP_NUM_TASKS / SLURM_NTASKS, SLURM_LOCALID, and
//                            MASTER_ADDR, MASTER_PORT exported by the job script: TCP host
//                            collectives; without MASTER_ADDR under srun --mpi=pmix, MPI
//   nothing                  one process (LocalComm)
// A job script (sbatch) running the program itself, not through srun, is one process; with
// SLURM_NTASKS > 1 that is an error (it would wait for tasks that never start).
// On CUDA each process takes GPU local_rank, and the tensor collectives go over NCCL.
#include <memory>
#include <string>

#include "lingua/dist/comm.h"

namespace lingua {

struct DistEnv {
  std::string launcher = "none";  // "none", "mpi", "env" (torchrun-style variables), "slurm" (srun)
  int rank = 0, size = 1, local_rank = 0, local_size = 1;
  std::string master_addr;
  int master_port = 0;
  bool torchelastic = false;  // started by torchrun (its store holds MASTER_PORT)
};
// Reads the launcher's variables; errors name the variable and its value.
DistEnv detect_dist_env();

class World {
 public:
  World(const DistEnv& env, std::unique_ptr<Communicator> host);
  ~World();
  int rank() const { return env_.rank; }
  int size() const { return env_.size; }
  int local_rank() const { return env_.local_rank; }
  const DistEnv& env() const { return env_; }
  Communicator& host() { return *host_; }
  // The communicator for tensors on `device`: NCCL for CUDA (made on first use, on the current
  // GPU), the host one for the CPU.
  Communicator& tensors(Device device);

 private:
  DistEnv env_;
  std::unique_ptr<Communicator> host_;
  std::unique_ptr<Communicator> nccl_;
};

// The process's world, made from the environment on first use (and kept for the process's life:
// MPI and NCCL set-up is done once).
World& process_world();

// For a CUDA run: selects the process's GPU (local rank modulo the GPUs visible) before any CUDA
// work; fails when there are more ranks on this node than GPUs.
void select_local_gpu(const World& world);

}  // namespace lingua
