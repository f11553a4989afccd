#include <nccl.h>

#include "lingua/core/cuda_utils.cuh"
#include "lingua/dist/nccl_comm.h"

#define NCCL_CHECK(call)                                                                                   \
  do {                                                                                                     \
    ncclResult_t r_ = (call);                                                                              \
    if (r_ != ncclSuccess) ::lingua::fail("NCCL error: ", ncclGetErrorString(r_), " at ", __FILE__, ":", \
                                          __LINE__, ": ", #call);                                          \
  } while (0)

namespace lingua {

bool nccl_built() { return true; }

namespace {

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::f32: return ncclFloat32;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
  }
  return ncclFloat32;
}

class NcclComm final : public Communicator {
 public:
  explicit NcclComm(Communicator& host) : Communicator(host.rank(), host.size()), host_(host) {
    ncclUniqueId id;
    if (rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    host_.broadcast(&id, sizeof id, 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, size(), id, rank()));
    // Higher priority than the library stream: a collective the backward waits on starts as soon
    // as its gradients are ready instead of queueing behind compute kernels.
    int lo = 0, hi = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, hi));
    CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
    for (cudaEvent_t& e : tickets_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  ~NcclComm() override {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaEventDestroy(fork_);
    cudaEventDestroy(join_);
    for (cudaEvent_t e : tickets_) cudaEventDestroy(e);
    cudaStreamDestroy(stream_);
  }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda; }
  void barrier() override { host_.barrier(); }
  void broadcast(void* data, size_t bytes, int root) override { host_.broadcast(data, bytes, root); }
  void all_reduce(double* data, int64_t n, ReduceOp op) override { host_.all_reduce(data, n, op); }
  void all_gather(const void* in, void* out, size_t bytes) override { host_.all_gather(in, out, bytes); }

  void all_reduce_tensor(const Tensor& t) override {
    check(t, "all_reduce_tensor", /*ints=*/true);
    fork();
    NCCL_CHECK(ncclAllReduce(t.data, t.data, (size_t)t.numel(), nccl_type(t.dtype), ncclSum, comm_, stream_));
    pending_ = true;
  }
  void all_gather_tensor(const Tensor& in, const Tensor& out) override {
    check(in, "all_gather_tensor");
    check(out, "all_gather_tensor");
    LINGUA_CHECK(in.dtype == out.dtype && out.numel() == in.numel() * size(), "all_gather_tensor: in ", in.str(),
                 ", out ", out.str(), " (out must hold ", size(), " x in)");
    fork();
    NCCL_CHECK(ncclAllGather(in.data, out.data, (size_t)in.numel(), nccl_type(in.dtype), comm_, stream_));
    pending_ = true;
  }
  void reduce_scatter_tensor(const Tensor& in, const Tensor& out) override {
    check(in, "reduce_scatter_tensor");
    check(out, "reduce_scatter_tensor");
    LINGUA_CHECK(in.dtype == out.dtype && in.numel() == out.numel() * size(), "reduce_scatter_tensor: in ",
                 in.str(), ", out ", out.str(), " (in must hold ", size(), " x out)");
    fork();
    NCCL_CHECK(ncclReduceScatter(in.data, out.data, (size_t)out.numel(), nccl_type(in.dtype), ncclSum, comm_,
                                 stream_));
    pending_ = true;
  }
  void wait_all() override {
    if (!pending_) return;
    CUDA_CHECK(cudaEventRecord(join_, stream_));
    CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(), join_, 0));
    pending_ = false;
  }
  void begin_group() override {
    fork();  // once for the group: the calls inside queue no CUDA work of their own before NCCL's
    in_group_ = true;
    NCCL_CHECK(ncclGroupStart());
  }
  void end_group() override {
    NCCL_CHECK(ncclGroupEnd());
    in_group_ = false;
  }
  uint64_t mark() override {
    const uint64_t t = next_ticket_++;
    CUDA_CHECK(cudaEventRecord(tickets_[t % kTickets], stream_));
    return t;
  }
  void wait(uint64_t ticket) override {
    LINGUA_CHECK(ticket < next_ticket_ && next_ticket_ - ticket <= kTickets, "internal error: NCCL ticket ", ticket,
                 " is not among the last ", kTickets, " marks");
    CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(), tickets_[ticket % kTickets], 0));
  }
  void all_reduce_device_doubles(double* data, int64_t n) override {
    fork();
    NCCL_CHECK(ncclAllReduce(data, data, (size_t)n, ncclFloat64, ncclSum, comm_, stream_));
    pending_ = true;
    wait_all();
  }

 private:
  void check(const Tensor& t, const char* what, bool ints = false) const {
    LINGUA_CHECK(t.device == Device::cuda && (ints || t.dtype != DType::i32), "NCCL ", what,
                 " takes f32 or bf16 CUDA tensors", ints ? " (or i32)" : "", ", got ", t.str());
  }
  // The communication stream waits for everything queued on the library stream so far.
  void fork() {
    if (in_group_) return;
    CUDA_CHECK(cudaEventRecord(fork_, cuda_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, fork_, 0));
  }
  Communicator& host_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  bool pending_ = false;
  bool in_group_ = false;
  static constexpr uint64_t kTickets = 64;
  cudaEvent_t tickets_[kTickets] = {};
  uint64_t next_ticket_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_comm(Communicator& host) { return std::make_unique<NcclComm>(host); }

}  // namespace lingua
