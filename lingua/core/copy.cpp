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
