#include <cstring>

#include "lingua/core/profiler.h"
#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"

namespace lingua {

void copy_tensor(const Tensor& dst, const Tensor& src) {
  LINGUA_PROFILE_SCOPE("copy_tensor");
  LINGUA_CHECK(dst.dtype == src.dtype && dst.numel() == src.numel(), "copy_tensor: ", dst.str(), " <- ", src.str());
  size_t n = src.nbytes();
  if (dst.device == Device::cpu && src.device == Device::cpu) std::memcpy(dst.data, src.data, n);
  else if (dst.device == Device::cuda && src.device == Device::cuda) copy_device_to_device(dst.data, src.data, n);
  else if (dst.device == Device::cuda) copy_to_device(dst.data, src.data, n);
  else copy_to_host(dst.data, src.data, n);
}

void copy_row_blocks(const Tensor& dst, int64_t dst_stride, int64_t dst_first, const Tensor& src, int64_t src_stride,
                     int64_t src_first, int64_t blocks, int64_t rows) {
  LINGUA_CHECK(dst.dtype == src.dtype && dst.device == src.device && dst.size(-1) == src.size(-1),
               "copy_row_blocks: ", dst.str(), " <- ", src.str());
  const size_t row = (size_t)src.size(-1) * dtype_size(src.dtype);
  char* d = static_cast<char*>(dst.data) + dst_first * row;
  const char* s = static_cast<const char*>(src.data) + src_first * row;
  if (dst.device == Device::cuda) {
    if (blocks == 1) return copy_device_to_device(d, s, rows * row);  // (2-D copies want pitches >= width)
    return copy_device_2d(d, dst_stride * row, s, src_stride * row, rows * row, blocks);
  }
  for (int64_t b = 0; b < blocks; ++b) std::memcpy(d + b * dst_stride * row, s + b * src_stride * row, rows * row);
}

void copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col, int64_t cols) {
  LINGUA_CHECK(dst.ndim == 2 && src.ndim == 2 && dst.dtype == src.dtype && dst.device == src.device &&
                   dst.size(0) == src.size(0) && dst_col >= 0 && src_col >= 0 && cols >= 0 &&
                   dst_col + cols <= dst.size(1) && src_col + cols <= src.size(1),
               "copy_columns: ", cols, " columns from ", src_col, " of ", src.str(), " to ", dst_col, " of ", dst.str());
  const size_t e = dtype_size(src.dtype), rows = (size_t)src.size(0);
  if (rows == 0 || cols == 0) return;
  char* d = static_cast<char*>(dst.data) + dst_col * e;
  const char* s = static_cast<const char*>(src.data) + src_col * e;
  const size_t dp = (size_t)dst.size(1) * e, sp = (size_t)src.size(1) * e, w = (size_t)cols * e;
  if (dst.device == Device::cuda) {
    if (rows == 1) return copy_device_to_device(d, s, w);
    return copy_device_2d(d, dp, s, sp, w, rows);
  }
  for (size_t r = 0; r < rows; ++r) std::memcpy(d + r * dp, s + r * sp, w);
}

void zero_row_blocks(const Tensor& t, int64_t stride, int64_t first, int64_t blocks, int64_t rows) {
  const size_t row = (size_t)t.size(-1) * dtype_size(t.dtype);
  char* d = static_cast<char*>(t.data) + first * row;
  for (int64_t b = 0; b < blocks; ++b) {
    if (t.device == Device::cuda) cuda_memset_zero(d + b * stride * row, rows * row);
    else std::memset(d + b * stride * row, 0, rows * row);
  }
}

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  int n = cuda_device_count();
  if (name == "cuda") {
    LINGUA_CHECK(cuda_built(), "config key 'device': cuda requested, but this lingua was built without CUDA");
    LINGUA_CHECK(n > 0, "config key 'device': cuda requested, but no GPU is available");
    return Device::cuda;
  }
  LINGUA_CHECK(name == "auto", "config key 'device': unknown device '", name, "' (auto, cpu, cuda)");
  return n > 0 ? Device::cuda : Device::cpu;
}

void cuda_synchronize_if(Device dev) {
  if (dev == Device::cuda) cuda_synchronize();
}

}  // namespace lingua
