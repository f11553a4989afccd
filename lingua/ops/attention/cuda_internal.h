#pragma once
// Internal to the CUDA attention (attention/cuda.cu, fallback.cu, cudnn_sdpa.cu) and its tests:
// the two implementations behind attention_forward_cuda / attention_backward_cuda, and which one
// ran. Plain C++ (no CUDA headers), so the host-compiled tests can include it.
//
// Selection (cuda.cu): LINGUA_ATTENTION=auto (default) | fallback | cudnn, read at every call.
//   auto      cuDNN when it supports the call (bf16, head_dim 64 or 128, S == T, 16-byte aligned
//             pointers, a plan that builds), else the fallback kernels.
//   fallback  always the fallback kernels (any dtype / head_dim / S >= T).
//   cudnn     cuDNN, or an Error naming why it cannot run this call.
// LINGUA_ATTENTION_DETERMINISTIC=1 (default) | 0: cuDNN backward graph without / with the fp32
// atomic dQ accumulator (see cudnn_sdpa.cu; 1 costs about B H T^2 2 bytes of workspace).
// LINGUA_ATTENTION_WORKSPACE_MB=1024 (default): the deterministic backward's workspace budget; a
// batch that needs more runs as calls on slices of it.
// LINGUA_ATTENTION_VERBOSE=1: one line on stderr for each cuDNN plan built (engine, workspace) or
// refused (why).
#include <string>

#include "lingua/core/tensor.h"

namespace lingua::attention_internal {

enum class Path { none, fallback, cudnn };
const char* path_name(Path p);

// The path the latest attention_forward_cuda / attention_backward_cuda call of this process took.
Path last_forward_path();
Path last_backward_path();

// Fallback kernels (fallback.cu): any dtype pair (all f32, or bf16 with lse f32), head_dim <= 256,
// S >= T (forward), deterministic. Arguments already checked by cuda.cu. keys >= 0: only the first
// `keys` of k's and v's k.size(1) rows per sequence are keys (attention_forward_cached).
void fallback_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                      int64_t keys = -1);
void fallback_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                       const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv);

// cuDNN (cudnn_sdpa.cu). Each returns false, with the reason in *why, when cuDNN cannot run the
// call (shape outside its support, no cuDNN, a graph that does not build: remembered per shape);
// true when the outputs were written. Arguments already checked by cuda.cu.
bool cudnn_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   std::string* why);
bool cudnn_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                    const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, std::string* why);

// Whether cuDNN runs this bf16 shape (builds and caches the plan); *why says why not.
bool cudnn_supported(int64_t B, int64_t T, int64_t S, int64_t H, int64_t KV, int64_t hd, bool backward,
                     std::string* why);
// cuDNN's runtime version (91400 for 9.14.0), 0 when cuDNN is not built in or does not load.
int64_t cudnn_version();
// One line per cached plan: shape, engine, numerical notes, workspace; or the reason it failed.
std::string cudnn_plans_report();

// Workspace for one call: cuda_op_scratch (core/cuda.h), shared with the other ops.
void* scratch(size_t bytes);

}  // namespace lingua::attention_internal
