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

// The communication stream and its events, shared by a communicator and the groups split from it.
struct CommStream {
  CommStream() {
    // Higher priority than the library stream: a collective the backward waits on starts as soon
    // as its gradients are ready instead of queueing behind compute kernels.
    int lo = 0, hi = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    CUDA_CHECK(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, hi));
    CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    for (cudaEvent_t& e : tickets) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  ~CommStream() {
    cudaStreamSynchronize(stream);
    cudaEventDestroy(fork);
    cudaEventDestroy(join);
    for (cudaEvent_t e : tickets) cudaEventDestroy(e);
    cudaStreamDestroy(stream);
  }
  CommStream(const CommStream&) = delete;
  CommStream& operator=(const CommStream&) = delete;
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  static constexpr uint64_t kTickets = 64;
  cudaEvent_t tickets[kTickets] = {};
  uint64_t next_ticket = 0;
};

class NcclComm final : public Communicator {
 public:
  explicit NcclComm(Communicator& host) : Communicator(host.rank(), host.size()), host_(host) {
    ncclUniqueId id;
    if (rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    host_.broadcast(&id, sizeof id, 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, size(), id, rank()));
    cs_ = std::make_shared<CommStream>();
  }
  // A group split from a parent: its host group, its NCCL communicator, the parent's stream.
  NcclComm(std::unique_ptr<Communicator> host, ncclComm_t comm, std::shared_ptr<CommStream> cs)
      : Communicator(host->rank(), host->size()), host_(*host), owned_host_(std::move(host)), comm_(comm),
        cs_(std::move(cs)) {}
  ~NcclComm() override {
    cudaStreamSynchronize(cs_->stream);
    ncclCommDestroy(comm_);
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    std::unique_ptr<Communicator> host = host_.split(color, key);
    ncclComm_t sub = nullptr;
    NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
    LINGUA_CHECK(sub != nullptr, "internal error: ncclCommSplit gave this rank no communicator");
    return std::make_unique<NcclComm>(std::move(host), sub, cs_);
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
    NCCL_CHECK(ncclAllReduce(t.data, t.data, (size_t)t.numel(), nccl_type(t.dtype), ncclSum, comm_, cs_->stream));
    pending_ = true;
  }
  void all_gather_tensor(const Tensor& in, const Tensor& out) override {
    check(in, "all_gather_tensor", /*ints=*/true);
    check(out, "all_gather_tensor", /*ints=*/true);
    LINGUA_CHECK(in.dtype == out.dtype && out.numel() == in.numel() * size(), "all_gather_tensor: in ", in.str(),
                 ", out ", out.str(), " (out must hold ", size(), " x in)");
    fork();
    NCCL_CHECK(ncclAllGather(in.data, out.data, (size_t)in.numel(), nccl_type(in.dtype), comm_, cs_->stream));
    pending_ = true;
  }
  void reduce_scatter_tensor(const Tensor& in, const Tensor& out) override {
    check(in, "reduce_scatter_tensor");
    check(out, "reduce_scatter_tensor");
    LINGUA_CHECK(in.dtype == out.dtype && in.numel() == out.numel() * size(), "reduce_scatter_tensor: in ",
                 in.str(), ", out ", out.str(), " (in must hold ", size(), " x out)");
    fork();
    NCCL_CHECK(ncclReduceScatter(in.data, out.data, (size_t)out.numel(), nccl_type(in.dtype), ncclSum, comm_,
                                 cs_->stream));
    pending_ = true;
  }
  void all_to_all_tensor(const Tensor& in, const Tensor& out) override {
    check(in, "all_to_all_tensor", /*ints=*/true);
    check(out, "all_to_all_tensor", /*ints=*/true);
    LINGUA_CHECK(in.dtype == out.dtype && in.numel() == out.numel() && in.numel() % size() == 0,
                 "all_to_all_tensor: in ", in.str(), ", out ", out.str());
    const size_t chunk = (size_t)(in.numel() / size()), bytes = chunk * dtype_size(in.dtype);
    fork();
    // One send and one receive per peer, grouped: NCCL runs them as one all-to-all.
    NCCL_CHECK(ncclGroupStart());
    for (int q = 0; q < size(); ++q) {
      NCCL_CHECK(ncclSend(static_cast<const char*>(in.data) + q * bytes, chunk, nccl_type(in.dtype), q, comm_,
                          cs_->stream));
      NCCL_CHECK(ncclRecv(static_cast<char*>(out.data) + q * bytes, chunk, nccl_type(in.dtype), q, comm_, cs_->stream));
    }
    NCCL_CHECK(ncclGroupEnd());
    pending_ = true;
  }
  void wait_all() override {
    if (!pending_) return;
    CUDA_CHECK(cudaEventRecord(cs_->join, cs_->stream));
    CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(), cs_->join, 0));
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
    const uint64_t t = cs_->next_ticket++;
    CUDA_CHECK(cudaEventRecord(cs_->tickets[t % CommStream::kTickets], cs_->stream));
    return t;
  }
  void wait(uint64_t ticket) override {
    LINGUA_CHECK(ticket < cs_->next_ticket && cs_->next_ticket - ticket <= CommStream::kTickets,
                 "internal error: NCCL ticket ", ticket, " is not among the last ", CommStream::kTickets, " marks");
    CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(), cs_->tickets[ticket % CommStream::kTickets], 0));
  }
  void all_reduce_device_doubles(double* data, int64_t n) override {
    fork();
    NCCL_CHECK(ncclAllReduce(data, data, (size_t)n, ncclFloat64, ncclSum, comm_, cs_->stream));
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
    CUDA_CHECK(cudaEventRecord(cs_->fork, cuda_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(cs_->stream, cs_->fork, 0));
  }
  Communicator& host_;
  std::unique_ptr<Communicator> owned_host_;  // a split group's
  ncclComm_t comm_ = nullptr;
  std::shared_ptr<CommStream> cs_;
  bool pending_ = false;
  bool in_group_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_comm(Communicator& host) { return std::make_unique<NcclComm>(host); }

}  // namespace lingua
