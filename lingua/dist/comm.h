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
  // In place sum over the ranks (op sum only; avg = sum then scale by the caller); also i32.
  virtual void all_reduce_tensor(const Tensor& t);
  // out [size() * in.numel()] = every rank's `in`, by rank.
  virtual void all_gather_tensor(const Tensor& in, const Tensor& out);
  // out [in.numel() / size()] = the sum over ranks of chunk rank() of `in`.
  virtual void reduce_scatter_tensor(const Tensor& in, const Tensor& out);
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

 protected:
  Communicator(int rank, int size) : rank_(rank), size_(size) {}
  // CPU tensors over the host collectives (f32 summed as float, rank order: every rank gets the
  // same bits).
  void all_reduce_floats(float* data, int64_t n);

 private:
  int rank_, size_;
};

// One process: every collective is the identity.
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
