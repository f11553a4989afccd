#pragma once
// The host-side face of the CUDA path, usable from plain C++ (no CUDA headers). Every function
// exists whether or not CUDA was built; without it, cuda_device_count() is 0 and the rest fail
// with a clear error. One binary thus runs on CPU-only machines and on GPUs.
#include <cstddef>
#include <cstdint>
#include <string>

namespace lingua {

bool cuda_built();            // compiled with the CUDA path
int cuda_device_count();      // 0 when not built, no driver or no GPU (never throws)
std::string cuda_device_name();  // "NVIDIA H100 80GB HBM3"
size_t cuda_peak_memory();    // bytes allocated at most through DeviceBuffer / the arena
void cuda_synchronize();      // waits for the current stream, then checks for errors

// Owned device memory (cudaMalloc / cudaFree). Movable, not copyable.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return ptr_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void zero();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// One device buffer that ops share for workspace used only within one call (the attention's
// cuDNN workspace, the cross-entropy's logits chunk): ops run one after another on one stream, so
// they can share it, and peak memory holds the largest such workspace once instead of their sum.
// Valid until the next call of any op that uses it. Grown when a call needs more (after waiting
// for the stream), never shrunk.
void* cuda_op_scratch(size_t bytes);

// Timing events recorded on the current stream (the profiler's clock). Handles are opaque.
void* cuda_event_create();
void cuda_event_destroy(void* event);
void cuda_event_record(void* event);
float cuda_event_elapsed_ms(void* start, void* end);  // both recorded and complete
// NVTX ranges (shown by Nsight tools); no-ops without CUDA.
void cuda_range_push(const char* name);
void cuda_range_pop();

// Synchronous copies on the current stream (host memory is pageable).
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_device_to_device(void* dst, const void* src, size_t bytes);  // async on the stream

}  // namespace lingua

#include "lingua/core/tensor.h"

namespace lingua {
// dst = src for tensors of the same dtype and numel, on any devices (host or CUDA).
void copy_tensor(const Tensor& dst, const Tensor& src);

// The device a config's `device` key names: auto (cuda when a GPU is present), cpu or cuda.
// Fails when cuda is asked for and not available.
Device resolve_device(const std::string& name);
// cuda_synchronize() when dev is CUDA (for timing).
void cuda_synchronize_if(Device dev);
}  // namespace lingua
