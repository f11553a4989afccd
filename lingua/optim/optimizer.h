#pragma once
// AdamW over a ParamStore's trainable parameters, in the optimizer groups their modules declare.
// Each group has its own hyper-parameters and its own gradient-norm clipping (the global norm over
// the group's parameters), and may be row-sparse (a table whose rows are indexed by the step's
// input ids: a step updates only the rows its micro-batches saw). Moments live in two flat buffers
// with the store's gradient layout; when the store is laid out again (parameters added or
// removed between steps) they follow by name.
//
// One path for every device and group kind: per group, the norm of each segment (a run of adjacent
// dense parameters, or one row-sparse table) is accumulated into the group's slot of the store's
// StepScalars, the clip coefficient is computed there, and each segment is updated reading the
// coefficient and the step constants from there. Nothing waits for the host, so on CUDA the update
// can be captured in a CUDA graph.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lingua/config/train_config.h"
#include "lingua/model/param_store.h"
#include "lingua/ops/adamw/adamw.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

struct ParamGroup {
  std::string name;
  OptimGroupHyper hyper;
  std::vector<int> params;  // ParamStore ids (trainable only)
  // What one norm / update call covers: a dense run of parameters adjacent in the weight, gradient
  // and bf16 buffers (CUDA merges them; the CPU keeps one per parameter), or a row-sparse table.
  struct Segment {
    int64_t offset, grad_offset, numel;  // in floats
    int64_t bf16_offset;                 // -1: no bf16 copy
    int table = -1;                      // row-sparse: the table's parameter id
    bool split = false;                  // parameters split over processes (their local part)
    int split_kind = 0;                  // their Placement::Kind (one per group)
  };
  std::vector<Segment> segments;
  size_t step_slot = 0, stats_slot = 0;  // in StepScalars: AdamWStepScalars (host-written), GroupStats
};

struct StepReport {
  std::map<std::string, double> lr;  // per group, after the schedule
};

class AdamW {
 public:
  // Groups other than "default" take their hyper-parameters from the module that declared them
  // (ParamStore::declare_group) resolved against cfg.
  AdamW(ParamStore& store, const OptimConfig& cfg);

  // The input ids of a micro-batch of the coming step ([N] i32 on the store's device); `first`
  // clears the rows seen so far. Marks the rows of the row-sparse groups (device work, capturable;
  // nothing to do without such groups).
  void observe_input_ids(const Tensor& ids, bool first);
  bool row_sparse() const { return is_given(sync().rows_); }
  Tensor rows_seen() const { return sync().rows_; }  // [rows] i32, nonzero: seen since the last `first`

  // One update with learning-rate multiplier lr_mult, from the gradients in the store.
  // step = prepare + apply: prepare is the host part (counts the step, schedules the learning
  // rates, sends the step's constants to the device); apply is the update itself, which reads no
  // host value, so that it can be captured once in a CUDA graph.
  StepReport step(double lr_mult);
  StepReport prepare(double lr_mult);
  void apply();
  // Per group, the global gradient norm of the last step, before clipping (on CUDA this waits for
  // the step). When any is NaN or inf, apply() skipped the whole step on the device: parameters and
  // moments are unchanged (the caller takes the step back with set_steps_taken, or stops).
  std::map<std::string, double> last_grad_norms() const;

  // Parameters split over processes (ParamInfo::placement): each process holds a part of their
  // gradients, so a group's norm needs the sum of every process's part. `reducer` sums a group's
  // partial sum of squares (a double in the store's device memory) over the processes that hold
  // the parts of parameters placed as `kind`, complete on the library stream when it returns
  // (capturable). Set by the sharding layer of that kind (FSDP: flat shards; table parallelism:
  // column slices). A group's split parameters must share one kind.
  void set_split_norm_reducer(std::function<void(double* sq)> reducer, Placement::Kind kind = Placement::flat_shard) {
    split_norm_reducer_[kind] = std::move(reducer);
  }

  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  const std::vector<ParamGroup>& groups() const { return sync().groups_; }
  bool has_group(const std::string& name) const;
  // Moments of trainable parameter `id` (its local shape, on the store's device).
  Tensor m(int id) const;
  Tensor v(int id) const;
  // Host copies for checkpoint IO, and writing them back.
  std::vector<float> host_m(int id) const;
  std::vector<float> host_v(int id) const;
  void set_moments(int id, const float* m, const float* v);

 private:
  struct GroupStats {
    double sq, norm;
    float coef, pad_;
  };
  void build_groups();
  void follow_layout();  // the store was laid out again: moments move by name
  // Every accessor first follows a new layout of the store (parameters added, removed or frozen
  // since), so moments are never read or written at stale offsets.
  const AdamW& sync() const;
  Tensor moment(int which, int id) const;                   // 0: m, 1: v
  std::vector<float> host_moment(int which, int id) const;
  float* moment_base(int which) const;
  ParamStore& store_;
  OptimConfig cfg_;
  std::vector<ParamGroup> groups_;
  std::vector<float> host_m_, host_v_;  // CPU: the moments
  DeviceBuffer dm_, dv_;                // CUDA: the moments
  std::map<std::string, std::pair<int64_t, int64_t>> moment_at_;  // name -> (grad_offset, numel) of the layout
  uint64_t layout_epoch_ = 0;
  std::vector<int32_t> rows_host_;  // CPU: the rows seen
  DeviceBuffer rows_dev_;           // CUDA: the rows seen
  Tensor rows_;
  int64_t t_ = 0;
  std::function<void(double*)> split_norm_reducer_[3] = {[](double*) {}, [](double*) {}, [](double*) {}};
};

}  // namespace lingua
