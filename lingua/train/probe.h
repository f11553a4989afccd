#pragma once
// Lingua's probe (probe_freq): every probe_freq steps, after the optimizer step, one extra forward
// and backward pass without an update, on the first sequences of the step's first micro-batch,
// records for every Linear (by weight name, "layers.0.attention.wq"; stacked weights such as w1
// and w3 apart):
//   input, output (x W^T alone, without a fused residual), output_grad, weight, weight_grad:
//   mean, std, skew, kurtosis (Pearson's, 3 for a normal), abs_mean and the element count n,
// and for every attention layer the entropy (nats) of its attention distributions, per head and
// averaged, over up to 64 query rows per sequence evenly spaced to the last (all of a short one).
// One JSON line per probe step in dump_dir/probe/probe.<rank>.jsonl. The pass changes no
// weight, optimizer state, data position or random state: training with and without the probe is
// bitwise the same. Statistics of a split parameter (FSDP) are of this process's part.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lingua/exec/executor.h"
#include "lingua/model/probe_observer.h"

namespace lingua {

// Running moments of a stream of values (several calls add to one set).
struct MomentSums {
  int64_t n = 0;
  double s1 = 0, s2 = 0, s3 = 0, s4 = 0, abs = 0;
  void add(const float* v, int64_t count);
  // {"mean", "std", "skew", "kurtosis", "abs_mean", "n"}; skew and kurtosis are 0 when std is 0.
  nlohmann::json stats() const;
};

class Probe final : public ProbeObserver {
 public:
  // Appends to `path` (its directory is created).
  explicit Probe(std::string path, int max_sequences = 2);
  // The probe pass on the first min(B, max_sequences) sequences of [B, T] tokens / targets (host),
  // for global step `step`: appends the line to the file and returns it.
  nlohmann::json run(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T, int64_t step);

  void linear_forward(const Linear& l, const Tensor& x, const Tensor& y) override;
  void linear_backward(const Linear& l, const Tensor& dy) override;
  void attention_scores(const std::string& name, const Tensor& q, const Tensor& k, int prefix) override;
  Tensor scratch_like(const Tensor& t) override;

 private:
  struct LinearRecord {
    const Linear* linear = nullptr;
    std::vector<MomentSums> input, output, output_grad;  // per stacked weight (input: shared)
  };
  LinearRecord& record_of(const Linear& l);  // (made when first seen, kept in order_)
  void split_columns(const Linear& l, const Tensor& t, std::vector<MomentSums>& into);
  std::string path_;
  int max_sequences_;
  std::map<std::string, LinearRecord> linears_;
  std::vector<std::string> order_;  // names in the order first seen
  std::map<std::string, nlohmann::json> entropy_;
  std::vector<std::vector<float>> host_scratch_;
  std::vector<std::unique_ptr<DeviceBuffer>> device_scratch_;
};

}  // namespace lingua
