#pragma once
// ParamStore: every parameter of a model, declared by the module that owns it (a ParamSpec: name,
// shape, axis roles, init, optimizer group, trainability, placement), laid out in flat buffers:
//   weights   fp32, every parameter                       (offset, numel)
//   gradients fp32, trainable parameters only             (grad_offset; the optimizer's moments
//                                                          use the same layout)
//   bf16 copy CUDA, parameters that matmuls read           (bf16_offset)
// Each parameter starts 64-byte aligned (its size padded to 16 floats), in declaration order, so
// parameters declared one after the other, each a multiple of 16 floats, with the same
// trainability and bf16 copy, are adjacent in every buffer (a module may read them as one matrix).
// The checkpoint, the optimizer, and later sharding and growth all work on these names and offsets.
//
// Parameters can be added, removed and frozen after the layout is made (between steps): the
// buffers are laid out again (old and new held at once while values move), every other parameter
// keeps its values, layout_epoch() moves, and whoever holds pointers into the buffers (the
// optimizer's moments, a captured step) follows by name.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"
#include "lingua/model/step_scalars.h"

namespace lingua {

struct ParamInfo;

// How a parameter's values are made. Open: any function of (seed, the parameter) that fills the
// values this process holds. The built-in ones draw element `global_index` of the full tensor from
// a Philox stream keyed by (seed, name), so a value never depends on declaration order, device or
// how the parameter is split over processes.
struct ParamInit {
  std::function<void(uint64_t seed, const ParamInfo& p, float* local)> fill;
  std::string what;  // for messages: "trunc_normal(0.02)", ...
  static ParamInit trunc_normal(float std);  // N(0, std^2) cut at +-3 std
  static ParamInit normal(float std);        // N(0, std^2)
  static ParamInit constant(float value);
  static ParamInit ones() { return constant(1.0f); }
  static ParamInit zeros() { return constant(0.0f); }
};

// How a parameter is spread over the `size` ranks of a process group (this process is `rank`).
struct Placement {
  enum Kind { whole, flat_shard, column_slice } kind = whole;
  int size = 1, rank = 0;
  // whole: every rank holds all of it.
  // flat_shard: the row-major elements split in `size` equal chunks of ceil(numel / size), the last
  //   one padded with zeros (FSDP); the local shape is [chunk].
  // column_slice: the last axis split in `size` equal slices (must divide), rank r holding columns
  //   [r * C / size, (r + 1) * C / size) (table parallelism); the local shape is
  //   [..., C / size].
  static Placement Whole() { return {}; }
  static Placement FlatShard(int size, int rank) { return {flat_shard, size, rank}; }
  static Placement ColumnSlice(int size, int rank) { return {column_slice, size, rank}; }
};

// What a module declares for each parameter.
struct ParamSpec {
  std::string name;                // e.g. "layers.3.attention.wq.weight" (Lingua's state-dict names)
  std::vector<int64_t> shape;      // the full shape
  // One role per axis, shared by axes that must keep the same size and meaning across parameters
  // (width growth resizes a role everywhere; sharding splits along one): "dim", "hidden", "vocab",
  // "q_heads", "kv_heads" (heads x head_dim), ...
  std::vector<std::string> axes;
  ParamInit init;
  std::string group = "default";   // optimizer group; others are declared with declare_group()
  bool trainable = true;           // frozen: no gradient, no optimizer state, no weight-gradient matmul
  bool embedding = false;          // looked up, not multiplied: memory, not FLOPs (accounting)
  // CUDA: matmuls read a bf16 copy the optimizer keeps equal to the rounded weights. A parameter
  // only gathered from (an embedding table) has none and is read in fp32.
  bool compute_copy = true;
  Placement placement;
};

struct ParamInfo : ParamSpec {
  std::vector<int64_t> local_shape;  // what this process holds (the shape of param(i))
  int64_t offset = 0, numel = 0;     // into the weight buffer, in floats (local)
  int64_t grad_offset = -1;          // into the gradient buffer (-1: frozen)
  int64_t bf16_offset = -1;          // into the bf16 copy, in elements (-1: none)
  int64_t full_numel() const;
  // Index in the full tensor (row-major) of local element i; -1 for flat-shard padding.
  int64_t global_index(int64_t i) const;
  // This process's part (local_shape; flat-shard padding 0) of the full values [shape].
  std::vector<float> held_part(const std::vector<float>& full) const;
};

// The hyper-parameters of one optimizer group, resolved from the config.
struct OptimGroupHyper {
  double lr, weight_decay, beta1, beta2, eps, clip;
  // Row-sparse AdamW: the group's parameters are tables [vocab, C] whose rows are indexed by the
  // step's input token ids; a step updates only the rows of the ids it saw.
  bool rows_by_input_ids = false;
};
// An optimizer group other than "default", declared by the module that owns its parameters (no
// other code names it): how its hyper-parameters follow from the optim config, and how it is
// described in logs.
struct OptimGroupSpec {
  std::string name;
  std::function<OptimGroupHyper(const OptimConfig&)> resolve;
  std::string description;  // what its parameters are, for logs (e.g. "token-indexed tables")
};
// optim.* as a group's hyper-parameters (the default group).
OptimGroupHyper default_group_hyper(const OptimConfig& cfg);

class ParamStore {
 public:
  ParamStore();
  ~ParamStore();
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  // Declares a parameter; returns its id (stable for the store's life). Before finalize(), or
  // afterwards (then laid out at once and initialised with the seed of the last init()). It goes
  // after parameter `after` in the layout (-1: last): a module adding a parameter between steps
  // puts it beside its own, so that a stage's gradients stay one range.
  int add(ParamSpec spec, int after = -1);
  // Removes a parameter after finalize() (its memory is freed by the new layout).
  void remove(int id);
  // Freezes (no gradient, no optimizer state) or unfreezes a parameter; after finalize() the
  // gradient buffer is laid out again (e.g. a base model frozen after loading it).
  void set_trainable(int id, bool trainable);
  // Declares an optimizer group; declaring the same name again is allowed (same module kind).
  void declare_group(OptimGroupSpec spec);
  const OptimGroupSpec* group_spec(const std::string& name) const;  // null when undeclared
  // Allocates the flat buffers (weights and gradients zero-filled).
  void finalize();
  // Fills every parameter from its init.
  void init(uint64_t seed);

  // The live parameters' ids, in layout order.
  const std::vector<int>& ids() const { return order_; }
  int size() const { return (int)order_.size(); }
  const ParamInfo& info(int id) const;
  int find(const std::string& name) const;   // -1 if absent
  int index(const std::string& name) const;  // error if absent
  bool trainable(int id) const { return info(id).grad_offset >= 0; }

  // What modules compute with, in the parameter's full shape on the store's device. For a whole
  // parameter, views of the store's buffers; for one split over processes (placement not whole),
  // the full tensors the sharding layer materialised (set_full_views; an error before that).
  Tensor param(int id) const;  // fp32 master weights (whole parameters only)
  Tensor grad(int id) const;   // fp32 gradient; an empty Tensor for a frozen parameter
  // What matmuls read: the fp32 weights on the CPU; on CUDA the bf16 copy (an error without one).
  Tensor compute_param(int id) const;
  Tensor bf16_copy(int id) const;  // CUDA: the bf16 copy, else an empty Tensor
  // What this process stores (shape info(id).local_shape): the optimizer's and the checkpoint's view.
  Tensor local_param(int id) const;
  Tensor local_grad(int id) const;  // empty for a frozen parameter
  Tensor local_bf16(int id) const;  // CUDA with a bf16 copy, else empty

  // Splits a whole parameter over the processes of a group (before to_device: the full values are
  // on the host): this process keeps its part of the values (Placement), the rest is dropped.
  void set_placement(int id, Placement placement);
  // For a split parameter: the full-shape tensors modules compute with from now on (what matmuls
  // read, and where its gradient accumulates), owned by the sharding layer. The grad view may
  // change between calls (rotating buffers); empty tensors unset them.
  void set_full_views(int id, const Tensor& compute, const Tensor& grad);
  // For a whole parameter: what matmuls read instead of the weights (compute_param), in the
  // compute dtype (f32 on the CPU, bf16 on CUDA), owned by whoever sets it (G_random's width
  // masks: the weights times a mask); gradients still accumulate in the store. An empty tensor
  // unsets it.
  void set_compute_view(int id, const Tensor& compute);
  int64_t total() const { return total_; }            // floats in the weight buffer
  int64_t grad_total() const { return grad_total_; }  // floats in the gradient buffer
  int64_t bf16_total() const { return bf16_total_; }
  // Moves whenever the buffers are laid out again (add / remove after finalize, to_device).
  uint64_t layout_epoch() const { return layout_epoch_; }
  // Moves whenever parameter values may have changed: init, set_param, a new layout or device,
  // and values_written(), which whoever writes the buffers directly calls (the optimizer's step).
  // What is derived from the values (pre-merged weights) is made again when it moves.
  uint64_t values_epoch() const { return values_epoch_; }
  void values_written() { ++values_epoch_; }

  void zero_grads();
  void zero_grads(int64_t begin, int64_t end);  // gradient floats [begin, end)
  // Gradients in memory the caller owns (grad_total() floats on the store's device; the model's
  // executor places them over dead activations); the store's own gradient buffer is freed.
  // nullptr: no gradients until the caller places them.
  void use_external_grads(float* grads);
  void use_own_grads();  // back to the store's own buffer (zeroed)
  bool external_grads() const { return external_; }
  float* grads_data() const { return grads_ptr_; }  // the gradient buffer in use (store's device)
  float* params_data() const;                       // the weight buffer (store's device)
  void* bf16_data() const { return d_bf16_.data(); }

  // Host copies, made when asked (CUDA keeps no host mirror): the whole weight buffer in layout
  // order (index by info(id).offset), one parameter, and the gradients.
  std::vector<float> host_values() const;
  std::vector<float> host_param(int id) const;
  std::vector<float> host_grads() const;
  // Writes one parameter's values (local_shape, host memory); CUDA refreshes its bf16 copy.
  void set_param(int id, const float* values);

  void to_device(Device device);  // CPU -> CUDA: uploads and drops the host buffers
  size_t host_bytes() const;      // host memory the store holds (0 on CUDA: no mirror)
  Device device() const { return device_; }

  // Per-step values device code reads (learning-rate constants, gradient norms, mixing weights).
  StepScalars& step_scalars() { return scalars_; }
  const StepScalars& step_scalars() const { return scalars_; }

 private:
  void layout();                      // offsets of every live parameter
  void relayout(int fresh = -1);      // after finalize: new buffers, values kept (but `fresh`'s)
  void allocate_own_grads();          // zeroed, grad_total() floats on the store's device
  void init_param(int id, uint64_t seed);
  Tensor view(char* base, const ParamInfo& p, int64_t offset, DType dt) const;
  std::vector<ParamInfo> infos_;      // by id (removed ones stay, with removed_ set)
  struct FullViews {
    Tensor compute, grad;
  };
  std::vector<FullViews> full_views_;  // by id: split parameters; whole ones' compute views
  const FullViews& full_views(int id, const char* what) const;
  std::vector<bool> removed_;
  std::vector<int> order_;
  std::map<std::string, int> by_name_;
  std::map<std::string, OptimGroupSpec> groups_;
  std::vector<float> params_, grads_;  // CPU
  DeviceBuffer d_params_, d_grads_, d_bf16_;
  float* grads_ptr_ = nullptr;
  bool external_ = false;
  Device device_ = Device::cpu;
  int64_t total_ = 0, grad_total_ = 0, bf16_total_ = 0;
  bool final_ = false;
  uint64_t seed_ = 0;
  uint64_t layout_epoch_ = 0;
  uint64_t values_epoch_ = 1;
  StepScalars scalars_;
};

// Full values of parameters split over processes (ParamInfo::placement not whole), by parameter
// id, as the distributed layer gathers them for a checkpoint: the weights and the AdamW moments.
struct FullValues {
  std::vector<float> weights, m, v;
};
using SplitValues = std::map<int, FullValues>;

uint32_t name_stream_id(const std::string& name);  // stable 32-bit hash (FNV-1a)

}  // namespace lingua
