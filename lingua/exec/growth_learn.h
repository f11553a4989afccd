#pragma once
// G_learn (SPEC §5; LiGO, "Learning to Grow Pretrained Models", in depth): a learned linear map from
// the source's layers to the target's. Each parameter p of target block l is a mix of the same
// parameter of every source block,
//   W_t[l].p = sum_j alpha[l][p][j] W_s[j].p
// (the embedding, the final norm and the head are copied). alpha starts one-hot on a stacking list,
// so the map at its start is G_stack; it is trained on the loss of the target model with Adam,
// its gradient dL/dalpha[l][p][j] = <dL/dW_t[l].p, W_s[j].p> read from a backward pass of the
// target, and then applied: the target's weights are the mix of the last alpha. Works on the CPU
// and the GPU (the mixing on the host: alpha has L_t x params-per-block x L_s entries).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lingua/exec/executor.h"

namespace lingua {

class LearnedGrowth {
 public:
  // source: the trained smaller model (host or device); target: built from the target config,
  // the same but for n_layers (check_growth with op stack); list: alpha's start (G_stack's list).
  // Writes the target's weights for that start.
  LearnedGrowth(const Transformer& source, Transformer& target, const std::vector<int>& list);

  // One Adam step on alpha (learning rate lr, betas 0.9 / 0.999) from one batch through `exec`
  // (the target's executor; its gradients are overwritten), then the target's weights are
  // rewritten from the new alpha. Returns the batch's mean loss before the step. `replicas`: the
  // processes whose gradients exec's data-parallel hooks sum (each with its own batch; 1: none):
  // the loss is scaled by 1 / replicas, so alpha follows the mean over all their batches and stays
  // the same on every process.
  double step(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T, double lr,
              int replicas = 1);
  // dL/dalpha of one batch (L: the loss summed over the batch / (B T replicas), summed over the
  // replicas), without a step; `loss`, when given, receives this batch's mean loss.
  std::vector<double> gradient(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T,
                               double* loss = nullptr, int replicas = 1);
  // alpha, flattened [target layer][parameter][source layer] (parameters in name order).
  const std::vector<double>& alpha() const { return alpha_; }
  void set_alpha(const std::vector<double>& a);  // and rewrites the target's weights
  int steps() const { return t_; }

 private:
  void write_target();
  Transformer& target_;
  int Ls_ = 0, Lt_ = 0;
  std::vector<std::string> suffixes_;                   // the block parameters' names after "layers.<l>."
  std::vector<std::vector<std::vector<float>>> src_;    // [suffix][source layer] values
  std::vector<std::vector<int>> dst_ids_;               // [target layer][suffix] -> target parameter id
  std::vector<double> alpha_, m_, v_;
  int t_ = 0;
};

}  // namespace lingua
