#pragma once
// ParamStore: every parameter and its gradient live in one flat fp32 buffer each, with a named view
// per parameter. The optimizer keeps its moments in buffers of the same layout; the checkpoint,
// the optimizer and (later) sharding and growth all work on these names and offsets.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"

namespace lingua {

struct ParamInit {
  enum Kind { trunc_normal, normal, ones, zeros } kind = trunc_normal;
  float std = 0.02f;  // trunc_normal: cut at +-3 std; normal: not cut
};

struct ParamInfo {
  std::string name;            // e.g. "layers.3.attention.wq.weight"
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;  // into the flat buffers, in floats
  std::string group = "default";  // optimizer group
  ParamInit init;
  bool embedding = false;      // counts as an embedding (not in FLOPs / MFU)
  // CUDA: whether matmuls read it, through a bf16 copy the optimizer keeps (compute_param). A
  // parameter only gathered from (the STEM tables) has none: its fp32 weights are read directly.
  bool compute_copy = true;
  int64_t bf16_offset = -1;    // into the bf16 copy, in elements (-1: no copy)
};

class ParamStore {
 public:
  // Declares a parameter; returns its index. Only before finalize().
  int add(const std::string& name, std::vector<int64_t> shape, ParamInit init, std::string group = "default",
          bool embedding = false, bool compute_copy = true);
  // Allocates the flat buffers (params and grads, zero-filled).
  void finalize();
  // Fills every parameter from its ParamInit. A parameter's values depend only on (seed, its name),
  // not on declaration order or device.
  void init(uint64_t seed);

  int size() const { return (int)infos_.size(); }
  const ParamInfo& info(int i) const { return infos_[i]; }
  const std::vector<ParamInfo>& infos() const { return infos_; }
  int find(const std::string& name) const;  // -1 if absent
  int index(const std::string& name) const; // error if absent

  // Views of shape info(i).shape on the store's device: the fp32 master weights and gradients.
  Tensor param(int i) const;
  Tensor grad(int i) const;
  // What matmuls read: the fp32 weights on the CPU; on CUDA a bf16 copy that upload() and the
  // optimizer keep equal to the rounded master weights (an error for a parameter without one).
  Tensor compute_param(int i) const;
  // The bf16 copy of parameter i (CUDA), or an empty Tensor when it has none (or on the CPU).
  Tensor bf16_copy(int i) const;
  int64_t total() const { return total_; }
  int64_t bf16_total() const { return bf16_total_; }  // elements of the bf16 copy
  void zero_grads();
  // Zeroes the gradients of the flat range [begin, end) (in floats).
  void zero_grads(int64_t begin, int64_t end);
  // Gradients in memory the caller owns, total() floats on the store's device (the model puts them
  // in activation memory they outlive: Transformer::set_grads_in_activations); the store's own
  // gradient buffer is freed meanwhile. nullptr: no gradients until the caller places them.
  void use_external_grads(float* grads);
  void use_own_grads();  // back to the store's own buffer (zeroed)
  bool external_grads() const { return external_; }

  // Host copies (the CPU path's own buffers; on CUDA a mirror for init and checkpoint IO).
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads();  // CPU only (may be null while external gradients are not placed yet)
  Tensor host_param(int i) const;  // f32 host view, for checkpoint IO

  // Moves the store to `device` (CUDA: allocates device buffers and uploads the host weights).
  void to_device(Device device);
  Device device() const { return device_; }
  void upload();          // host weights -> device (after loading a checkpoint into the host mirror)
  void download() const;  // device weights -> host mirror (before saving)
  // Raw device buffers (CUDA), for the optimizer's fused kernels.
  float* device_params() const { return d_params_.as<float>(); }
  float* device_grads() const { return grads_ptr_; }
  void* device_params_bf16() const { return d_bf16_.data(); }

 private:
  Tensor view(void* base, int i, DType dt, Device dev) const;
  std::vector<ParamInfo> infos_;
  std::map<std::string, int> by_name_;
  mutable std::vector<float> params_, grads_;
  DeviceBuffer d_params_, d_grads_, d_bf16_;
  float* grads_ptr_ = nullptr;  // the gradients in use: grads_, d_grads_ or external memory
  bool external_ = false;
  Device device_ = Device::cpu;
  int64_t total_ = 0, bf16_total_ = 0;
  bool final_ = false;
};

uint32_t name_stream_id(const std::string& name);  // stable 32-bit hash (FNV-1a)

}  // namespace lingua
