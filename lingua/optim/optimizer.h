#pragma once
// AdamW over a ParamStore with parameter groups. Each group has its own hyper-parameters and its
// own gradient-norm clipping (the global norm over the group's parameters). Moments live in two
// flat buffers with the ParamStore's layout.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/model/param_store.h"
#include "lingua/ops/adamw/adamw.h"

namespace lingua {

struct ParamGroup {
  std::string name;
  double lr, weight_decay, beta1, beta2, eps, clip;
  std::vector<int> params;  // ParamStore indices
  // The group's parameters as ranges of the flat buffers (adjacent parameters merged): the CUDA
  // path updates a whole range per kernel.
  struct Span {
    int64_t offset, numel;  // in the fp32 buffers, in floats
    int64_t bf16_offset;    // in the store's bf16 copy (-1: the range has none)
  };
  std::vector<Span> spans;
  // Row-sparse groups (set_sparse_rows): [rows] i32, nonzero for the rows to update.
  Tensor sparse_rows;
};

// optim.stem.* resolved against optim.*: the hyper-parameters of the STEM tables' group, keyed by
// its name, for AdamW's `overrides`.
std::map<std::string, OptimConfig> group_overrides(const OptimConfig& cfg);

struct StepReport {
  std::map<std::string, double> lr;  // per group, after the schedule
};

class AdamW {
 public:
  // Every parameter is put into the group its ParamInfo names; groups other than "default" take
  // their hyper-parameters from `overrides` (or the defaults from cfg when absent).
  AdamW(ParamStore& store, const OptimConfig& cfg, const std::map<std::string, OptimConfig>& overrides = {});

  // Makes `group` row-sparse: each step updates only the rows r of its parameters (all [rows, C])
  // with rows_mask[r] != 0, which the caller keeps current (the model marks the rows of the step's
  // tokens). Other rows are not touched at all: no weight decay, no moment decay, no bf16 copy
  // write. The group's gradient norm (for clipping and logging) is taken over the marked rows.
  // rows_mask: [rows] i32 on the store's device, owned by the caller, alive as long as this.
  void set_sparse_rows(const std::string& group, const Tensor& rows_mask);
  bool has_group(const std::string& name) const;

  // One update with learning-rate multiplier lr_mult, from the gradients in the store. On CUDA it
  // never waits for the GPU: the norms, the clip coefficients and the update stay on the device.
  // step = prepare + apply: prepare is the host part (counts the step, schedules the learning
  // rates and, on CUDA, queues the step's constants to the device); apply is the update itself,
  // which on CUDA reads no host value, so that it can be captured once in a CUDA graph.
  StepReport step(double lr_mult);
  StepReport prepare(double lr_mult);
  void apply();
  // Per group, the global gradient norm of the last step, before clipping. On CUDA this reads it
  // back (waits for the step), so call it only when logging.
  std::map<std::string, double> last_grad_norms() const;

  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  Tensor m(int i) const;  // first moment of parameter i, its shape, on the store's device
  Tensor v(int i) const;
  // Host copies of the moments for checkpoint IO (on CUDA: download() before reading them,
  // upload() after writing them).
  Tensor host_m(int i) const;
  Tensor host_v(int i) const;
  void download() const;
  void upload();

 private:
  Tensor view(void* base, int i, Device dev) const;
  ParamStore& store_;
  std::vector<ParamGroup> groups_;
  mutable std::vector<float> m_, v_;  // host (the CPU path's own, or the CUDA path's mirror)
  DeviceBuffer dm_, dv_;
  // CUDA: per group {sum of squares (double), norm (double), clip coefficient (float)}.
  struct GroupStats {
    double sq, norm;
    float coef;
    float pad_;
  };
  DeviceBuffer dstats_;
  std::vector<AdamWHyper> hyper_;             // per group, of the prepared step
  std::vector<AdamWStepScalars> scalars_;     // per group, of the prepared step (CUDA)
  DeviceBuffer dscalars_;                     // their device copy, read by the update
  std::map<std::string, double> norms_;  // the CPU path's last norms
  int64_t t_ = 0;
};

}  // namespace lingua
