#pragma once
// StepScalars: the per-step values that device code reads (the optimizer's learning-rate and
// bias-correction constants, its gradient norms and clip coefficients, later a mixing weight),
// in one buffer on the model's device at fixed addresses, so that a step captured once as a CUDA
// graph reads each step's new values. Two regions:
//   host-written   the host sets values in a staging copy and upload() sends the whole region with
//                  one copy, in stream order before the step's work (the staging copy is pageable
//                  host memory, so the copy is taken before upload() returns and the host may write
//                  the next values at once; it cannot be captured, and never is: it runs before
//                  a graph launch);
//   device-written kernels write them (norms, coefficients); read() fetches them for logging.
// On the CPU the staging copy is the buffer itself.
#include <cstddef>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"

namespace lingua {

class StepScalars {
 public:
  enum class Writer { host, device };
  static constexpr size_t kRegionBytes = 8192;  // per region; addresses never move

  StepScalars();
  // A slot of `bytes` in the writer's region (16-byte aligned, zero-filled); asking again for the
  // same name returns the same slot (its size must match).
  size_t slot(const std::string& name, size_t bytes, Writer writer);
  // The address device code reads or writes (host memory on the CPU).
  void* at(size_t offset) const { return base() + offset; }
  template <class T> T* at(size_t offset) const { return reinterpret_cast<T*>(at(offset)); }
  // Host-written slots: where the host writes (the staging copy; the buffer itself on the CPU).
  template <class T> T* staged(size_t offset) { return reinterpret_cast<T*>(staging() + offset); }
  // Sends every host-written slot to the device (asynchronous, stream-ordered; no-op on the CPU).
  void upload();
  // Copies device-written values to the host (waits for the GPU on CUDA).
  void read(size_t offset, void* dst, size_t bytes) const;

  void to_device(Device device);
  Device device() const { return device_; }

 private:
  char* base() const;
  char* staging();
  Device device_ = Device::cpu;
  std::vector<char> host_;  // CPU: the buffer (both regions)
  DeviceBuffer dev_;        // CUDA: the buffer
  std::vector<char> staging_;  // CUDA: the host-written region's staging copy
  size_t used_[2] = {0, 0};
  std::map<std::string, std::pair<size_t, size_t>> slots_;  // name -> (offset, bytes)
};

}  // namespace lingua
