#pragma once
// G_learn (SPEC §5; LiGO, "Learning to Grow Pretrained Models"): a learned linear map from the
// source's parameters to the target's. In depth, each parameter p of target block l is a mix of the
// same parameter of every source block,
//   X[l].p = sum_j alpha[l][p][j] W_s[j].p;
// in width (a wider FFN, more heads, a wider model.dim: G_split's widenings), every target
// parameter is that mix (outside the blocks: the source's tensor) times learned expansion matrices
// on its growing axes, W_t = E_out X E_in^T (growth_learn_width.h); else W_t = X. alpha starts
// one-hot on a stacking list and the matrices as G_split's copies, so the map at its start is
// G_split (no widening: G_stack). The map is trained on the loss of the target model with Adam,
// its gradients (dL/dalpha[l][p][j] = <dL/dX[l].p, W_s[j].p>, dL/dE by the chain rule) from a
// backward pass of the target, and then applied: the target's weights are the map's last value.
// Works on the CPU and the GPU (the map on the host: models are small at growth time), and on a
// target whose parameters are split over processes (FSDP's flat shards): given `gather`, each
// split parameter's gradient is gathered whole on every process (the map's gradient is then the
// same everywhere, as an unsplit target's), and each process writes its part of the weights.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lingua/exec/executor.h"
#include "lingua/exec/growth_learn_width.h"

namespace lingua {

class LearnedGrowth {
 public:
  // source: the trained smaller model (host or device); target: built from the target config
  // (check_growth with op learn); list: alpha's start (G_stack's list); seed: G_split's choice of
  // copied units. Writes the target's weights for that start.
  // gather(p, local): a split parameter's full values [p.shape] from this process's part [p.numel]
  // (a collective over the processes it is split over: called in the same order on each); empty:
  // every target parameter must be whole.
  using Gather = std::function<std::vector<float>(const ParamInfo& p, const std::vector<float>& local)>;
  LearnedGrowth(const Transformer& source, Transformer& target, const std::vector<int>& list, uint64_t seed = 0,
                Gather gather = {});

  // One Adam step on alpha (learning rate lr, betas 0.9 / 0.999) from one batch through `exec`
  // (the target's executor; its gradients are overwritten), then the target's weights are
  // rewritten from the new alpha. Returns the batch's mean loss before the step. `replicas`: the
  // processes whose gradients exec's data-parallel hooks sum (each with its own batch; 1: none):
  // the loss is scaled by 1 / replicas, so alpha follows the mean over all their batches and stays
  // the same on every process.
  double step(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T, double lr,
              int replicas = 1);
  // dL/dcoefficients of one batch (L: the loss summed over the batch / (B T replicas), summed over
  // the replicas), without a step; `loss`, when given, receives this batch's mean loss.
  std::vector<double> gradient(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T,
                               double* loss = nullptr, int replicas = 1);
  // One Adam step on the map from a gradient (gradient()'s, or the sum of several batches' taken with
  // replicas = their count), then the target is rewritten: step() is gradient() and this.
  void apply_gradient(const std::vector<double>& d, double lr);
  // The map: alpha [target layer][parameter][source layer] (parameters in name order), then the
  // width matrices (width().matrices(), each at alpha_size() + its offset). set_* rewrite the target.
  const std::vector<double>& coefficients() const { return coef_; }
  void set_coefficients(const std::vector<double>& c);
  size_t alpha_size() const { return alpha_size_; }
  std::vector<double> alpha() const { return {coef_.begin(), coef_.begin() + (std::ptrdiff_t)alpha_size_}; }
  void set_alpha(const std::vector<double>& a);
  const WidthExpansion& width() const { return width_; }
  int steps() const { return t_; }

 private:
  std::vector<float> mix(int l, size_t p) const;  // X[l].p
  void write_target();
  void put(int id, const std::vector<float>& full);  // this process's part of target parameter id
  Transformer& target_;
  Gather gather_;
  int Ls_ = 0, Lt_ = 0;
  std::vector<std::string> suffixes_;                   // the block parameters' names after "layers.<l>."
  std::vector<std::vector<std::vector<float>>> src_;    // [suffix][source layer] values
  std::vector<std::vector<int>> dst_ids_;               // [target layer][suffix] -> target parameter id
  std::vector<std::pair<int, std::vector<float>>> rest_;  // widened parameters outside the blocks: id, source value
  WidthExpansion width_;
  size_t alpha_size_ = 0;
  std::vector<double> coef_, m_, v_;
  int t_ = 0;
};

}  // namespace lingua
