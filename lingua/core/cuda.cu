#include <atomic>
#include <mutex>

#include <nvtx3/nvToolsExt.h>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_utils.cuh"

namespace lingua {

namespace {
std::atomic<size_t> g_allocated{0}, g_peak{0};
}

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
  CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  return p.name;
}

size_t cuda_peak_memory() { return g_peak.load(); }

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
  });
  return ctx;
}

void cuda_synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
  CUDA_CHECK(cudaGetLastError());
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  cuda_context();
  if (bytes == 0) return;
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

void copy_to_device(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream()));
  CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream()));
  CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

void copy_device_to_device(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
}

void* cuda_op_scratch(size_t bytes) {
  static DeviceBuffer* buf = new DeviceBuffer();  // never freed: no cudaFree during static destruction
  if (buf->bytes() < bytes) {
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));  // work in flight may still use the old one
    *buf = DeviceBuffer();                             // free first: old and new never coexist
    *buf = DeviceBuffer(bytes);
  }
  return buf->data();
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
