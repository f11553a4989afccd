#pragma once
// Multi-head causal self-attention with GQA and RoPE (Lingua's Attention).
#include <string>
#include <vector>

#include "lingua/model/dims.h"
#include "lingua/model/module.h"
#include "lingua/model/param_store.h"
#include "lingua/ops/rope/rope.h"

namespace lingua {

// Keys and values of past positions for decoding one sequence: per layer [max_len, KV, hd] f32.
struct KVCache {
  int max_len = 0, len = 0;
  std::vector<std::vector<float>> k, v;
  KVCache(const ModelDims& d, int max_len);
};

class Attention {
 public:
  Attention(ParamStore& store, const ModelDims& dims, const ModelConfig& cfg, int layer, const std::string& prefix,
            const RopeTable& rope);
  // x: [N, dim] normalised input, y: [N, dim] written.
  void forward(const Tensor& x, const Tensor& y, const StepContext& ctx);
  // dy: [N, dim]; dx: [N, dim] written.
  void backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const StepContext& ctx);
  // Decoding: T new tokens of one sequence (B = 1) at positions cache.len...; appends to the cache.
  void forward_cached(const Tensor& x, const Tensor& y, KVCache& cache, int layer, Arena& arena);
  size_t saved_floats(int64_t B, int64_t T) const;
  size_t scratch_floats(int64_t B, int64_t T) const;
  int64_t matmul_params() const;

 private:
  ParamStore& store_;
  const RopeTable& rope_;
  int64_t dim_, H_, KV_, hd_;
  int wq_, wk_, wv_, wo_;
  Tensor q_, k_, v_, o_, lse_;  // saved for backward
};

}  // namespace lingua
