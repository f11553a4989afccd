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
std::string cuda_device_name();  // of the current device: "NVIDIA H100 80GB HBM3"
// Selects the GPU this process uses (one process per GPU: its local rank). Must come before any
// other CUDA work of the process (the library stream and handles belong to one device).
void cuda_set_device(int index);
int cuda_current_device();
size_t cuda_peak_memory();    // bytes allocated at most through DeviceBuffer / the arena
void cuda_reset_peak_memory();  // the peak from now on starts at the bytes allocated now (benchmarks)
void cuda_synchronize();      // waits for the current stream, then checks for errors (not while capturing)

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

// Owned page-locked host memory (cudaMallocHost / cudaFreeHost), the source or target of truly
// asynchronous copies. Movable, not copyable.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return ptr_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// One device buffer that ops share for workspace used only within one call (the attention's
// cuDNN workspace, the cross-entropy's logits chunk): ops run one after another on one stream, so
// they can share it, and peak memory holds the largest such workspace once instead of their sum.
// Valid until the next call of any op that uses it. Grown when a call needs more (after waiting
// for the stream), never shrunk. Growing inside a graph capture is an Error: size it with an eager
// call of the same shapes first.
void* cuda_op_scratch(size_t bytes);

// For an op's persistent scratch buffer (never shrunk): returns buf.data() after growing buf to
// max(bytes, min_bytes) when it holds fewer than `bytes` (waits for the stream, frees, then
// allocates, and bumps cuda_scratch_epoch()). Growing inside a graph capture is an Error naming
// `what`.
void* cuda_grow_scratch(DeviceBuffer& buf, size_t bytes, size_t min_bytes, const char* what);
// Counts scratch reallocations: a graph captured at one epoch holds dangling pointers after the next.
uint64_t cuda_scratch_epoch();

// Timing events recorded on the current stream (the profiler's clock). Handles are opaque.
void* cuda_event_create();
void cuda_event_destroy(void* event);
void cuda_event_record(void* event);
float cuda_event_elapsed_ms(void* start, void* end);  // both recorded and complete
// NVTX ranges (shown by Nsight tools); no-ops without CUDA.
void cuda_range_push(const char* name);
void cuda_range_pop();

// Synchronous copies on the current stream (host memory is pageable). Errors inside a capture.
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_device_to_device(void* dst, const void* src, size_t bytes);  // async on the stream
void cuda_memset_zero(void* dst, size_t bytes);                          // async on the stream
// `height` blocks of `width` bytes, block i from src + i * spitch to dst + i * dpitch, device to
// device (async on the stream).
void copy_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height);
// Host -> device, queued on the stream without waiting. src should be pinned (a PinnedBuffer;
// pageable memory makes the call wait for the copy, and cannot be captured) and must keep its
// value until the stream has run the copy (e.g. use one slot per step in flight, or synchronise).
// Inside a capture it becomes a node of the graph, reading src at each launch.
void copy_to_device_async(void* dst, const void* src, size_t bytes);

// ---- CUDA graphs ----
// The library stream (a cudaStream_t) for interop with other CUDA code; null when CUDA is not built.
void* cuda_stream_handle();
// Whether the library stream is being captured (an invalidated capture not yet ended counts).
bool cuda_stream_capturing();

// A captured sequence of the library stream's work, replayed with launch(). Between
// begin_capture() and end_capture() (same thread) ops are recorded, not run; nothing may
// synchronise or allocate (copy_to_host, copy_to_device, cuda_synchronize, a scratch or
// DeviceBuffer allocation fail with an Error). The graph bakes in every pointer and by-value
// argument: values that change per launch must be read from device memory. Movable, not copyable.
//   CudaGraph g;  g.begin_capture();  step();  g.end_capture();   // then g.launch() per step
// If an exception escapes between begin and end, abort_capture() (also run by the destructor and
// reset()) ends the capture and discards it, leaving the stream usable.
class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(CudaGraph&& o) noexcept;
  CudaGraph& operator=(CudaGraph&& o) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  void begin_capture();  // drops a previous graph; mode cudaStreamCaptureModeThreadLocal
  // Ends and instantiates. If the capture failed, throws an Error with the CUDA error string; the
  // stream is usable again and the graph stays empty.
  void end_capture();
  void abort_capture() noexcept;  // ends a capture in progress (if any) and discards it
  // Queues the graph on the library stream. Fails if an op scratch buffer was reallocated since
  // the capture (the graph would use freed memory): capture again.
  void launch();
  bool ready() const { return exec_ != nullptr; }
  bool capturing() const { return capturing_; }
  size_t num_nodes() const { return nodes_; }  // of the captured graph
  void reset() noexcept;  // abort_capture(), then frees the graph

 private:
  void* exec_ = nullptr;  // cudaGraphExec_t
  size_t nodes_ = 0;
  uint64_t epoch_ = 0;  // cuda_scratch_epoch() at capture
  bool capturing_ = false;
};

}  // namespace lingua

#include "lingua/core/tensor.h"

namespace lingua {
// dst = src for tensors of the same dtype and numel, on any devices (host or CUDA).
void copy_tensor(const Tensor& dst, const Tensor& src);
// Row blocks between a compact and a strided tensor of one device: `blocks` blocks of `rows` rows,
// block b from src rows [b * src_stride + src_first, + rows) to dst rows [b * dst_stride +
// dst_first, + rows) (rows of dst.size(-1) elements, same dtype). Async on CUDA.
void copy_row_blocks(const Tensor& dst, int64_t dst_stride, int64_t dst_first, const Tensor& src, int64_t src_stride,
                     int64_t src_first, int64_t blocks, int64_t rows);
// Columns between 2-D row-major tensors of one device and dtype with the same row count:
// dst[r, dst_col + c] = src[r, src_col + c] for c < cols (a strided copy; async on CUDA).
void copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col, int64_t cols);
// Zeroes the same kind of row blocks of t (async on CUDA).
void zero_row_blocks(const Tensor& t, int64_t stride, int64_t first, int64_t blocks, int64_t rows);

// The device a config's `device` key names: auto (cuda when a GPU is present), cpu or cuda.
// Fails when cuda is asked for and not available.
Device resolve_device(const std::string& name);
// cuda_synchronize() when dev is CUDA (for timing).
void cuda_synchronize_if(Device dev);
}  // namespace lingua
