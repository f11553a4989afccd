#pragma once
// MpiComm: the host collectives and CPU tensor collectives over MPI (processes started by mpirun,
// or srun with MPI support). MPI is initialised once per process, on the first MpiComm, and
// finalised at exit.
#include <memory>

#include "lingua/dist/comm.h"

namespace lingua {

class MpiComm final : public Communicator {
 public:
  // Over every process of the job (MPI_COMM_WORLD, duplicated).
  static std::unique_ptr<MpiComm> world();
  ~MpiComm() override;
  std::string backend() const override { return "mpi"; }
  void barrier() override;
  void broadcast(void* data, size_t bytes, int root) override;
  void all_reduce(double* data, int64_t n, ReduceOp op) override;
  void all_gather(const void* in, void* out, size_t bytes) override;
  void all_reduce_tensor(const Tensor& t) override;  // f32 / i32 CPU, MPI_Allreduce (same bits on every rank); bf16 generic
  void all_to_all_tensor(const Tensor& in, const Tensor& out) override;  // CPU, MPI_Alltoall
  std::unique_ptr<Communicator> split(int color, int key) override;  // MPI_Comm_split

 private:
  MpiComm(int rank, int size, void* comm);
  void* comm_;  // MPI_Comm
};

// Whether this process was started by an MPI launcher (mpirun's OMPI_COMM_WORLD_SIZE, or PMIx).
bool started_by_mpi();

}  // namespace lingua
