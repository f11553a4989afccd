#pragma once
// Multi-head causal self-attention with GQA and RoPE (Lingua's Attention).
#include <string>
#include <vector>

#include "lingua/model/dims.h"
#include "lingua/model/module.h"
#include "lingua/model/param_store.h"
#include "lingua/ops/rope/rope.h"

namespace lingua {

// Keys and values of past positions for decoding one sequence: per layer [max_len, KV, hd], in the
// model's activation dtype and on its device.
struct KVCache {
  int max_len = 0, len = 0;
  KVCache(const ModelDims& d, int max_len, Device device = Device::cpu, DType dtype = DType::f32);
  Tensor k(int layer, int64_t len) const;  // [1, len, KV, hd] view of the first len positions
  Tensor v(int layer, int64_t len) const;
  Tensor k_at(int layer, int64_t pos, int64_t n) const;  // [n, KV * hd] rows pos.. (for writing)
  Tensor v_at(int layer, int64_t pos, int64_t n) const;

 private:
  Tensor view(int layer, bool is_v, int64_t pos, std::initializer_list<int64_t> dims) const;
  int64_t kv_, hd_;
  Device device_;
  DType dtype_;
  std::vector<std::vector<float>> host_;  // CPU: 2 per layer (k, v)
  std::vector<DeviceBuffer> dev_;         // CUDA: 2 per layer
};

class Attention {
 public:
  Attention(ParamStore& store, const ModelDims& dims, const ModelConfig& cfg, int layer, const std::string& prefix,
            const RopeTable& rope);
  // x: [N, dim] normalised input (ctx.act); y: [N, dim] f32 written with residual + attention(x)
  // (residual [N, dim] f32, fused into the output projection; may be y itself, or empty).
  void forward(const Tensor& x, const Tensor& residual, const Tensor& y, const StepContext& ctx);
  // dy: [N, dim] ctx.act; dx: [N, dim] f32 or ctx.act, written.
  void backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const StepContext& ctx);
  // Decoding: T new tokens of one sequence (B = 1) at positions cache.len...; appends to the cache.
  // y = residual + attention(x) as in forward.
  void forward_cached(const Tensor& x, const Tensor& residual, const Tensor& y, KVCache& cache, int layer,
                      const StepContext& ctx);
  size_t saved_bytes(int64_t B, int64_t T, DType act) const;    // arena bytes kept for backward
  size_t scratch_bytes(int64_t B, int64_t T, DType act) const;  // transient
  int64_t matmul_params() const;

 private:
  ParamStore& store_;
  const RopeTable& rope_;
  int64_t dim_, H_, KV_, hd_;
  int wq_, wk_, wv_, wo_;
  Tensor q_, k_, v_, o_, lse_;  // saved for backward
};

}  // namespace lingua
