#include <algorithm>
#include <atomic>
#include <mutex>

#include <nvtx3/nvToolsExt.h>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_utils.cuh"

namespace lingua {

namespace {
std::atomic<size_t> g_allocated{0}, g_peak{0};
std::atomic<uint64_t> g_scratch_epoch{0};
std::atomic<bool> g_context_ready{false};
// CudaGraph captures begun on this thread and not yet ended: cudaMalloc / cudaMallocHost would
// invalidate them (thread-local capture mode forbids them on the capturing thread only).
thread_local int t_captures = 0;

void check_no_sync(const char* what) {
  if (cuda_stream_capturing()) fail(what, ": would synchronise inside a CUDA graph capture");
}
void check_no_alloc(const char* what, size_t bytes) {
  if (t_captures > 0)
    fail(what, ": would allocate ", bytes, " bytes inside a CUDA graph capture (allocate before capturing)");
}
}  // namespace

bool cuda_built() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string cuda_device_name() {
  cudaDeviceProp p;
  CUDA_CHECK(cudaGetDeviceProperties(&p, cuda_current_device()));
  return p.name;
}

int cuda_current_device() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

void cuda_set_device(int index) {
  const int n = cuda_device_count();
  LINGUA_CHECK(index >= 0 && index < n, "GPU ", index, " asked for, this machine has ", n);
  if (g_context_ready.load()) {
    LINGUA_CHECK(cuda_current_device() == index, "cuda_set_device(", index, ") after CUDA work began on GPU ",
                 cuda_current_device());
    return;
  }
  CUDA_CHECK(cudaSetDevice(index));
}

size_t cuda_peak_memory() { return g_peak.load(); }
void cuda_reset_peak_memory() { g_peak.store(g_allocated.load()); }

CudaContext& cuda_context() {
  static CudaContext ctx;
  static std::once_flag once;
  std::call_once(once, [] {
    LINGUA_CHECK(cuda_device_count() > 0, "no CUDA device available");
    CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&ctx.lt));
    ctx.workspace_bytes = 32u << 20;
    CUDA_CHECK(cudaMalloc(&ctx.workspace, ctx.workspace_bytes));
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&ctx.sm_count, cudaDevAttrMultiProcessorCount, dev));
    g_context_ready = true;
  });
  return ctx;
}

void* cuda_stream_handle() { return cuda_stream(); }

bool cuda_stream_capturing() {
  if (!g_context_ready.load()) return false;  // no stream yet
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(cuda_stream(), &st));
  return st != cudaStreamCaptureStatusNone;
}

void cuda_synchronize() {
  check_no_sync("cuda_synchronize");
  CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
  CUDA_CHECK(cudaGetLastError());
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  cuda_context();
  if (bytes == 0) return;
  check_no_alloc("DeviceBuffer", bytes);
  cudaError_t e = cudaMalloc(&ptr_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail("out of GPU memory allocating ", bytes / double(1 << 20), " MiB (", cudaGetErrorString(e), "); ",
         g_allocated.load() / double(1 << 30), " GiB already allocated");
  }
  size_t now = g_allocated += bytes;
  size_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) {
    cudaFree(ptr_);
    g_allocated -= bytes_;
  }
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(bytes_, o.bytes_);
  return *this;
}

void DeviceBuffer::zero() {
  if (bytes_) CUDA_CHECK(cudaMemsetAsync(ptr_, 0, bytes_, cuda_stream()));
}

void cuda_memset_zero(void* dst, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda_stream()));
}

PinnedBuffer::PinnedBuffer(size_t bytes) {
  cuda_context();
  if (bytes == 0) return;
  check_no_alloc("PinnedBuffer", bytes);
  cudaError_t e = cudaMallocHost(&ptr_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    ptr_ = nullptr;
    fail("cannot allocate ", bytes / double(1 << 20), " MiB of pinned host memory (", cudaGetErrorString(e), ")");
  }
  bytes_ = bytes;
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(bytes_, o.bytes_);
  return *this;
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  check_no_sync("copy_to_device");
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream()));
  CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  check_no_sync("copy_to_host");
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream()));
  CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

void copy_device_to_device(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
}

void copy_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) {
  if (width && height)
    CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, cuda_stream()));
}

void copy_to_device_async(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream()));
}

void* cuda_grow_scratch(DeviceBuffer& buf, size_t bytes, size_t min_bytes, const char* what) {
  if (buf.bytes() < bytes) {
    if (cuda_stream_capturing())
      fail(what, ": would synchronise inside a CUDA graph capture (growing its scratch buffer to ", bytes,
           " bytes); run the same work once eagerly before capturing");
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));  // work in flight may still use the old one
    buf = DeviceBuffer();                              // free first: old and new never coexist
    buf = DeviceBuffer(std::max(bytes, min_bytes));
    ++g_scratch_epoch;
  }
  return buf.data();
}

uint64_t cuda_scratch_epoch() { return g_scratch_epoch.load(); }

void* cuda_op_scratch(size_t bytes) {
  static DeviceBuffer* buf = new DeviceBuffer();  // never freed: no cudaFree during static destruction
  return cuda_grow_scratch(*buf, bytes, 0, "cuda_op_scratch");
}

// ---- CudaGraph ----

CudaGraph::~CudaGraph() { reset(); }

CudaGraph::CudaGraph(CudaGraph&& o) noexcept
    : exec_(o.exec_), nodes_(o.nodes_), epoch_(o.epoch_), capturing_(o.capturing_) {
  o.exec_ = nullptr;
  o.nodes_ = 0;
  o.capturing_ = false;
}

CudaGraph& CudaGraph::operator=(CudaGraph&& o) noexcept {
  if (this != &o) {
    reset();
    exec_ = o.exec_;
    nodes_ = o.nodes_;
    epoch_ = o.epoch_;
    capturing_ = o.capturing_;
    o.exec_ = nullptr;
    o.nodes_ = 0;
    o.capturing_ = false;
  }
  return *this;
}

void CudaGraph::begin_capture() {
  LINGUA_CHECK(!capturing_, "CudaGraph::begin_capture: this graph is already capturing");
  LINGUA_CHECK(!cuda_stream_capturing(), "CudaGraph::begin_capture: the stream is already being captured");
  reset();
  CUDA_CHECK(cudaStreamBeginCapture(cuda_stream(), cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  ++t_captures;
}

void CudaGraph::end_capture() {
  LINGUA_CHECK(capturing_, "CudaGraph::end_capture: no capture in progress");
  capturing_ = false;
  --t_captures;
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(cuda_stream(), &graph);
  if (e != cudaSuccess || graph == nullptr) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // not sticky: clear it so that later launch checks do not see it
    fail("CudaGraph::end_capture: the capture failed (", cudaGetErrorString(e),
         "); was something run that synchronises or allocates?");
  }
  size_t nodes = 0;
  e = cudaGraphGetNodes(graph, nullptr, &nodes);
  cudaGraphExec_t exec = nullptr;
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the instance does not need it
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail("CudaGraph::end_capture: cannot instantiate the captured graph (", cudaGetErrorString(e), ")");
  }
  exec_ = exec;
  nodes_ = nodes;
  epoch_ = cuda_scratch_epoch();
}

void CudaGraph::abort_capture() noexcept {
  if (!capturing_) return;
  capturing_ = false;
  --t_captures;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(cuda_stream(), &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}

void CudaGraph::launch() {
  LINGUA_CHECK(exec_ != nullptr, "CudaGraph::launch: nothing captured");
  LINGUA_CHECK(epoch_ == cuda_scratch_epoch(),
               "CudaGraph::launch: an op's scratch buffer was reallocated after the capture (an eager call needed a "
               "larger one), so the graph would use freed memory; capture it again");
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), cuda_stream()));
}

void CudaGraph::reset() noexcept {
  abort_capture();
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  exec_ = nullptr;
  nodes_ = 0;
}

void* cuda_event_create() {
  cuda_context();
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreate(&e));
  return e;
}
void cuda_event_destroy(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}
void cuda_event_record(void* event) { CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), cuda_stream())); }
float cuda_event_elapsed_ms(void* start, void* end) {
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}
void cuda_range_push(const char* name) { nvtxRangePushA(name); }
void cuda_range_pop() { nvtxRangePop(); }

}  // namespace lingua
