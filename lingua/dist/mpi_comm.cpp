#include "lingua/dist/mpi_comm.h"

#include <mpi.h>

#include <cstdlib>
#include <limits>

namespace lingua {

namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI ", what, " failed: ", std::string(msg, (size_t)len));
}

void ensure_mpi_initialized() {
  int done = 0;
  MPI_Initialized(&done);
  if (done) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
  // Errors come back as codes (turned into lingua errors), not as an abort of the whole job.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::atexit([] {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  });
}

MPI_Comm as_comm(void* c) { return *static_cast<MPI_Comm*>(c); }

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

// MPI counts are int: large buffers go in pieces.
constexpr int64_t kMaxCount = std::numeric_limits<int>::max() / 2;

}  // namespace

bool started_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr ||
         std::getenv("PMI_RANK") != nullptr;
}

std::unique_ptr<MpiComm> MpiComm::world() {
  ensure_mpi_initialized();
  auto* c = new MPI_Comm;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, c), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(*c, &rank);
  MPI_Comm_size(*c, &size);
  return std::unique_ptr<MpiComm>(new MpiComm(rank, size, c));
}

MpiComm::MpiComm(int rank, int size, void* comm) : Communicator(rank, size), comm_(comm) {}

MpiComm::~MpiComm() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Comm_free(static_cast<MPI_Comm*>(comm_));
  delete static_cast<MPI_Comm*>(comm_);
}

void MpiComm::barrier() { check_mpi(MPI_Barrier(as_comm(comm_)), "MPI_Barrier"); }

void MpiComm::broadcast(void* data, size_t bytes, int root) {
  char* p = static_cast<char*>(data);
  for (size_t done = 0; done < bytes;) {
    const int n = (int)std::min<size_t>(bytes - done, kMaxCount);
    check_mpi(MPI_Bcast(p + done, n, MPI_BYTE, root, as_comm(comm_)), "MPI_Bcast");
    done += (size_t)n;
  }
}

void MpiComm::all_reduce(double* data, int64_t n, ReduceOp op) {
  for (int64_t done = 0; done < n;) {
    const int k = (int)std::min(n - done, kMaxCount);
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + done, k, MPI_DOUBLE, mpi_op(op), as_comm(comm_)), "MPI_Allreduce");
    done += k;
  }
}

void MpiComm::all_gather(const void* in, void* out, size_t bytes) {
  LINGUA_CHECK(bytes <= (size_t)kMaxCount, "MPI all_gather of ", bytes, " bytes per rank: too large");
  check_mpi(MPI_Allgather(in, (int)bytes, MPI_BYTE, out, (int)bytes, MPI_BYTE, as_comm(comm_)), "MPI_Allgather");
}

void MpiComm::all_reduce_tensor(const Tensor& t) {
  LINGUA_CHECK(t.device == Device::cpu, "MPI all_reduce_tensor takes CPU tensors, got ", t.str());
  if (t.dtype == DType::bf16) return Communicator::all_reduce_tensor(t);  // (MPI has no bf16 sum)
  // MPI's reduction order is fixed for a given communicator and size (Open MPI's tuned
  // allreduce), so every rank gets the same bits and runs are repeatable.
  char* p = static_cast<char*>(t.data);
  const int64_t n = t.numel();
  const MPI_Datatype type = t.dtype == DType::f32 ? MPI_FLOAT : MPI_INT;
  for (int64_t done = 0; done < n;) {
    const int k = (int)std::min(n - done, kMaxCount);
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, p + done * 4, k, type, MPI_SUM, as_comm(comm_)), "MPI_Allreduce");
    done += k;
  }
}

void MpiComm::all_to_all_tensor(const Tensor& in, const Tensor& out) {
  LINGUA_CHECK(in.device == Device::cpu && out.device == Device::cpu && in.dtype == out.dtype &&
                   in.numel() == out.numel() && in.numel() % size() == 0,
               "MPI all_to_all_tensor: in ", in.str(), ", out ", out.str());
  const size_t chunk = in.nbytes() / (size_t)size();
  LINGUA_CHECK(chunk <= (size_t)kMaxCount, "MPI all_to_all of ", chunk, " bytes per rank: too large");
  check_mpi(MPI_Alltoall(in.data, (int)chunk, MPI_BYTE, out.data, (int)chunk, MPI_BYTE, as_comm(comm_)), "MPI_Alltoall");
}

std::unique_ptr<Communicator> MpiComm::split(int color, int key) {
  auto* c = new MPI_Comm;
  const int rc = MPI_Comm_split(as_comm(comm_), color, key, c);
  if (rc != MPI_SUCCESS) delete c;
  check_mpi(rc, "MPI_Comm_split");
  MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(*c, &rank);
  MPI_Comm_size(*c, &size);
  return std::unique_ptr<MpiComm>(new MpiComm(rank, size, c));
}

}  // namespace lingua
