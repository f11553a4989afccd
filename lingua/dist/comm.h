#pragma once
// Communicator: collectives over the processes of a group (one process per GPU, or per CPU
// worker). Two kinds:
//   host collectives   small control values in host memory (loss sums, stop flags, train-state
//                      text, checks that every rank agrees); blocking.
//   tensor collectives the gradients and weights, Tensors on the communicator's device. On CUDA
//                      they are queued on a communication stream that first waits for the work
//                      queued so far on the library stream (so compute queued afterwards overlaps
//                      them), and wait_all() makes the library stream wait for every one queued;
//                      both are capturable in a CUDA graph. On the CPU they complete before
//                      returning.
// Backends: LocalComm (one process), MpiComm (mpirun; CPU buffers), TcpComm (torchrun-style
// environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; CPU buffers), NcclComm (CUDA tensors,
// with a host communicator for its control values and its bootstrap).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lingua/core/tensor.h"

namespace lingua {

enum class ReduceOp { sum, max, min };

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual std::string backend() const = 0;  // "local", "mpi", "tcp", "nccl"
  virtual Device device() const { return Device::cpu; }  // where tensor collectives' buffers live

  // ---- Host collectives (every rank calls each, in the same order) ----
  virtual void barrier() = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // In place over n values.
  virtual void all_reduce(double* data, int64_t n, ReduceOp op) = 0;
  // out: size() * bytes, rank r's `in` at r * bytes.
  virtual void all_gather(const void* in, void* out, size_t bytes) = 0;
  // Helpers on top of those.
  double all_reduce(double v, ReduceOp op);
  std::vector<std::string> all_gather_strings(const std::string& s);  // by rank
  std::string broadcast_string(const std::string& s, int root);

  // ---- Tensor collectives (Tensors on device(): f32, and bf16 on CUDA) ----
  // In place sum over the ranks (op sum only; avg = sum then scale by the caller); also i32, and
  // bf16 (on the CPU: every rank's values summed in fp32 in rank order, rounded to bf16 once; NCCL
  // rounds along its ring or tree).
  virtual void all_reduce_tensor(const Tensor& t);
  // out [size() * in.numel()] = every rank's `in`, by rank (any dtype).
  virtual void all_gather_tensor(const Tensor& in, const Tensor& out);
  // out [in.numel() / size()] = the sum over ranks of chunk rank() of `in`.
  virtual void reduce_scatter_tensor(const Tensor& in, const Tensor& out);
  // Chunk q of in (numel / size() elements each, any dtype) goes to rank q; out chunk q comes from
  // rank q (its in chunk rank()).
  virtual void all_to_all_tensor(const Tensor& in, const Tensor& out);
  virtual void wait_all() {}  // CUDA: the library stream waits for the queued tensor collectives
  // Several tensor collectives queued as one (NCCL groups them; needed for the per-parameter
  // collectives of a layer): begin_group(), the calls, end_group().
  virtual void begin_group() {}
  virtual void end_group() {}
  // A ticket for the tensor collectives queued so far; wait(ticket) makes the library stream wait
  // for them only (the finer-grained wait_all). Tickets stay valid for the last 64 marks.
  virtual uint64_t mark() { return 0; }
  virtual void wait(uint64_t ticket) {}
  // In place sum of n doubles in device() memory (host memory on the CPU), complete on the library
  // stream when it returns (a gradient norm's partial sums).
  virtual void all_reduce_device_doubles(double* data, int64_t n);

  // ---- Groups ----
  // The ranks that pass the same `color` form a communicator (collective: every rank calls it),
  // ranked by (key, rank here). This one must outlive it. MPI splits its communicator, NCCL its
  // communicator (sharing the communication stream, so collectives of a group and of its parent
  // run in the order they were queued); the others get a group whose collectives go through this
  // communicator's all_gather (every rank of this communicator must then call each of the group's
  // collectives at the same time, as the ranks of an SPMD program do).
  virtual std::unique_ptr<Communicator> split(int color, int key);

 protected:
  Communicator(int rank, int size) : rank_(rank), size_(size) {}
  // CPU tensors over the host collectives (f32 summed as float, rank order: every rank gets the
  // same bits).
  void all_reduce_floats(float* data, int64_t n);

 private:
  int rank_, size_;
};

// One process: every collective is the identity.
// A group of a parent communicator whose collectives are the parent's all_gather, from which each
// rank keeps its group's part (the generic Communicator::split).
class GroupComm final : public Communicator {
 public:
  GroupComm(Communicator& parent, std::vector<int> members);  // members: parent ranks by group rank
  std::string backend() const override { return parent_.backend() + "-group"; }
  void barrier() override { parent_.barrier(); }
  void broadcast(void* data, size_t bytes, int root) override;
  void all_reduce(double* data, int64_t n, ReduceOp op) override;
  void all_gather(const void* in, void* out, size_t bytes) override;
  using Communicator::all_reduce;

 private:
  Communicator& parent_;
  std::vector<int> members_;
};

class LocalComm final : public Communicator {
 public:
  LocalComm() : Communicator(0, 1) {}
  std::string backend() const override { return "local"; }
  void barrier() override {}
  void broadcast(void*, size_t, int) override {}
  void all_reduce(double*, int64_t, ReduceOp) override {}
  void all_gather(const void* in, void* out, size_t bytes) override;
};

}  // namespace lingua
