// CUDA attention: argument checks and the choice between cuDNN's fused flash attention
// (cudnn_sdpa.cu) and our own fallback kernels (fallback.cu). See cuda_internal.h for the
// LINGUA_ATTENTION variable.
#include <cstdlib>
#include <cstring>
#include <string>

#include "lingua/core/cuda.h"
#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/attention/attention.h"
#include "lingua/ops/attention/cuda_internal.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

namespace attention_internal {

namespace {

Path g_last_forward = Path::none, g_last_backward = Path::none;

enum class Mode { automatic, fallback, cudnn };

Mode requested_mode() {
  const char* e = std::getenv("LINGUA_ATTENTION");
  if (!e || !*e || !std::strcmp(e, "auto")) return Mode::automatic;
  if (!std::strcmp(e, "fallback")) return Mode::fallback;
  if (!std::strcmp(e, "cudnn")) return Mode::cudnn;
  fail("LINGUA_ATTENTION must be auto, fallback or cudnn, not '", e, "'");
}


}  // namespace

const char* path_name(Path p) { return p == Path::cudnn ? "cudnn" : p == Path::fallback ? "fallback" : "none"; }
Path last_forward_path() { return g_last_forward; }
Path last_backward_path() { return g_last_backward; }

void* scratch(size_t bytes) { return cuda_op_scratch(bytes); }  // shared with other ops (see cuda.h)

}  // namespace attention_internal

using namespace attention_internal;

namespace {

// q, k, v (and the rest) share a dtype: bf16, or f32 for the exact (fallback) path.
void check_common(const char* op, const Tensor& q, const Tensor& k) {
  check_cuda_arg(op, "q", q, {DType::bf16, DType::f32}, {-1, -1, -1, -1});
  const int64_t hd = q.size(3);
  check_cuda_arg(op, "k", k, {q.dtype}, {q.size(0), -1, -1, hd});
  const int64_t H = q.size(2), KV = k.size(2);
  LINGUA_CHECK(KV > 0 && H % KV == 0, op, ": query heads (", H, ") must be a multiple of kv heads (", KV, ")");
  LINGUA_CHECK(hd > 0 && hd <= 256, op, ": head_dim must be in [1, 256] on CUDA, got ", hd);
}

}  // namespace

void attention_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse) {
  const char* op = "attention_forward";
  check_common(op, q, k);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3), S = k.size(1), KV = k.size(2);
  check_cuda_arg(op, "v", v, {q.dtype}, {B, S, KV, hd});
  check_cuda_arg(op, "out", out, {q.dtype}, {B, T, H, hd});
  if (is_given(lse)) check_cuda_arg(op, "lse", lse, {DType::f32}, {B, H, T});
  LINGUA_CHECK(S >= T, op, ": fewer keys (", S, ") than queries (", T, ")");

  const Mode mode = requested_mode();
  if (mode != Mode::fallback) {
    std::string why;
    if (cudnn_forward(q, k, v, out, lse, &why)) {
      g_last_forward = Path::cudnn;
      return;
    }
    LINGUA_CHECK(mode != Mode::cudnn, op, ": LINGUA_ATTENTION=cudnn, but cuDNN cannot run this call (", q.str(),
                 ", k ", k.str(), "): ", why);
  }
  fallback_forward(q, k, v, out, lse);
  g_last_forward = Path::fallback;
}

void attention_forward_cached_cuda(const Tensor& q, const Tensor& k, const Tensor& v, int64_t S, const Tensor& out) {
  const char* op = "attention_forward_cached";
  check_common(op, q, k);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3), len = k.size(1), KV = k.size(2);
  check_cuda_arg(op, "v", v, {q.dtype}, {B, len, KV, hd});
  check_cuda_arg(op, "out", out, {q.dtype}, {B, T, H, hd});
  if (B == 1 || S == len) {  // the keys are one contiguous [B, S, KV, hd] block: either path
    const Tensor ks(k.data, {B, S, KV, hd}, k.dtype, k.device), vs(v.data, {B, S, KV, hd}, v.dtype, v.device);
    return attention_forward_cuda(q, ks, vs, out, Tensor());
  }
  LINGUA_CHECK(requested_mode() != Mode::cudnn, op, ": LINGUA_ATTENTION=cudnn, but cuDNN cannot run this call (", B,
               " sequences whose ", S, " keys are ", len, " rows apart: the fallback kernels read that layout)");
  LINGUA_CHECK(B <= 65535, op, ": at most 65535 sequences at once, got ", B);
  fallback_forward(q, k, v, out, Tensor(), S);  // sequences len rows apart
  g_last_forward = Path::fallback;
}

void attention_backward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const char* op = "attention_backward";
  check_common(op, q, k);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3), KV = k.size(2);
  LINGUA_CHECK(k.size(1) == T, op,
               ": backward needs as many keys as queries (S == T, no KV cache), got S = ", k.size(1), ", T = ", T);
  check_cuda_arg(op, "v", v, {q.dtype}, {B, T, KV, hd});
  check_cuda_arg(op, "out", out, {q.dtype}, {B, T, H, hd});
  check_cuda_arg(op, "lse", lse, {DType::f32}, {B, H, T});
  check_cuda_arg(op, "dout", dout, {q.dtype}, {B, T, H, hd});
  check_cuda_arg(op, "dq", dq, {q.dtype}, {B, T, H, hd});
  check_cuda_arg(op, "dk", dk, {q.dtype}, {B, T, KV, hd});
  check_cuda_arg(op, "dv", dv, {q.dtype}, {B, T, KV, hd});

  const Mode mode = requested_mode();
  if (mode != Mode::fallback) {
    std::string why;
    if (cudnn_backward(q, k, v, out, lse, dout, dq, dk, dv, &why)) {
      g_last_backward = Path::cudnn;
      return;
    }
    LINGUA_CHECK(mode != Mode::cudnn, op, ": LINGUA_ATTENTION=cudnn, but cuDNN cannot run this call (", q.str(),
                 ", k ", k.str(), "): ", why);
  }
  fallback_backward(q, k, v, out, lse, dout, dq, dk, dv);
  g_last_backward = Path::fallback;
}

std::string attention_cudnn_refusal(int64_t S, int64_t hd, bool backward) {
  using namespace attention_internal;
  if (requested_mode() == Mode::fallback) return "LINGUA_ATTENTION=fallback";
  std::string why;
  return cudnn_supported(1, S, S, 1, 1, hd, backward, &why) ? std::string() : why;
}

}  // namespace lingua
