#pragma once
// Multi-head causal self-attention with GQA and RoPE (Lingua's Attention).
#include <string>
#include <vector>

#include "lingua/model/dims.h"
#include "lingua/model/linear.h"
#include "lingua/model/module.h"
#include "lingua/model/param_store.h"
#include "lingua/ops/rope/rope.h"

namespace lingua {

// Keys and values of past rows for decoding `batch` sequences in step (the same rows each): per
// layer [batch, max_len, KV, hd], in the model's activation dtype and on its device. The first
// `prefix` rows of each sequence are its prefix rows (see SeqLayout), without a position; the rows
// after them are tokens 0, 1, ...
struct KVCache {
  int max_len = 0, len = 0;  // rows held per sequence, prefix rows included
  int prefix = 0;            // set by the first decode call of a sequence with prefix rows
  int batch = 1;
  int next_position() const { return len - prefix; }
  KVCache(const ModelDims& d, int max_len, Device device = Device::cpu, DType dtype = DType::f32, int batch = 1);
  Tensor k(int layer) const;  // [batch, max_len, KV, hd]
  Tensor v(int layer) const;
  // Writes rows [len, len + n) of every sequence from new_k / new_v [batch * n, KV * hd] (sequence
  // by sequence).
  void append(int layer, const Tensor& new_k, const Tensor& new_v, int64_t n);
  // One sequence (batch 1): rows [len, len + n) as [n, KV * hd], to write in place of append.
  Tensor k_rows(int layer, int64_t n) const;
  Tensor v_rows(int layer, int64_t n) const;

 private:
  Tensor view(int layer, bool is_v) const;
  Tensor rows(int layer, bool is_v, int64_t n) const;
  void check_room(int64_t n) const;  // rows [len, len + n) fit
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
  // x: [rows, dim] normalised input (ctx.act), rows laid out as ctx.seq (RoPE on the token rows
  // only); y: [rows, dim] f32 written with residual + attention(x) (residual [rows, dim] f32, fused
  // into the output projection; may be y itself, or empty).
  void forward(const Tensor& x, const Tensor& residual, const Tensor& y, const StepContext& ctx);
  // dy: [rows, dim] ctx.act; dx: [rows, dim] f32 or ctx.act, written.
  void backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const StepContext& ctx);
  // Decoding ctx.seq.B sequences in step: x holds each one's new rows in turn (ctx.seq.prefix
  // prefix rows when the cache is empty, then the tokens, at positions cache.next_position()...);
  // appends them to the cache (cache.batch == ctx.seq.B).
  // y = residual + attention(x) as in forward.
  void forward_cached(const Tensor& x, const Tensor& residual, const Tensor& y, KVCache& cache, int layer,
                      const StepContext& ctx);
  size_t saved_bytes(const SeqLayout& seq, DType act) const;    // arena bytes kept for backward
  size_t scratch_bytes(const SeqLayout& seq, DType act) const;  // transient
  int64_t matmul_params() const;

 private:
  const RopeTable& rope_;
  int64_t dim_, H_, KV_, hd_;
  Linear wq_, wk_, wv_, wo_;
  Tensor q_, k_, v_, o_, lse_;  // saved for backward
};

}  // namespace lingua
