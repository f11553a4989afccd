// Built only without the CUDA path: the device API reports no GPU and refuses to allocate.
#include <utility>

#include "lingua/core/cuda.h"
#include "lingua/core/error.h"

namespace lingua {

static const char* kNoCuda = "this lingua was built without CUDA (no nvcc found at build time)";
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_name() { return "none"; }
void cuda_set_device(int) { fail(kNoCuda); }
int cuda_current_device() { return 0; }
size_t cuda_peak_memory() { return 0; }
void cuda_reset_peak_memory() {}
void cuda_synchronize() {}
DeviceBuffer::DeviceBuffer(size_t) { fail(kNoCuda); }
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(bytes_, o.bytes_);
  return *this;
}
void DeviceBuffer::zero() { fail(kNoCuda); }
void cuda_memset_zero(void*, size_t) { fail(kNoCuda); }
PinnedBuffer::PinnedBuffer(size_t) { fail(kNoCuda); }
PinnedBuffer::~PinnedBuffer() = default;
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(bytes_, o.bytes_);
  return *this;
}
void* cuda_op_scratch(size_t) { fail(kNoCuda); }
void* cuda_grow_scratch(DeviceBuffer&, size_t, size_t, const char*) { fail(kNoCuda); }
uint64_t cuda_scratch_epoch() { return 0; }
void* cuda_event_create() { fail(kNoCuda); }
void cuda_event_destroy(void*) {}
void cuda_event_record(void*) { fail(kNoCuda); }
float cuda_event_elapsed_ms(void*, void*) { fail(kNoCuda); }
void cuda_range_push(const char*) {}
void cuda_range_pop() {}
void copy_to_device(void*, const void*, size_t) { fail(kNoCuda); }
void copy_to_host(void*, const void*, size_t) { fail(kNoCuda); }
void copy_device_to_device(void*, const void*, size_t) { fail(kNoCuda); }
void copy_device_2d(void*, size_t, const void*, size_t, size_t, size_t) { fail(kNoCuda); }
void copy_to_device_async(void*, const void*, size_t) { fail(kNoCuda); }
void* cuda_stream_handle() { return nullptr; }
bool cuda_stream_capturing() { return false; }
CudaGraph::~CudaGraph() = default;
CudaGraph::CudaGraph(CudaGraph&&) noexcept {}
CudaGraph& CudaGraph::operator=(CudaGraph&&) noexcept { return *this; }
void CudaGraph::begin_capture() { fail(kNoCuda); }
void CudaGraph::end_capture() { fail(kNoCuda); }
void CudaGraph::abort_capture() noexcept {}
void CudaGraph::launch() { fail(kNoCuda); }
void CudaGraph::reset() noexcept {}

}  // namespace lingua
