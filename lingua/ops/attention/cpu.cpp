#include <algorithm>
#include <cmath>
#include <vector>

#include "lingua/core/profiler.h"
#include "lingua/ops/attention/attention.h"
#include "lingua/ops/op_checks.h"

namespace lingua {

// Layout: q/out [B, T, H, hd], k/v [B, S, KV, hd]. Work is split over (batch, head) for forward and
// (batch, kv head) for backward, one thread per unit, every sum in a fixed order (deterministic).
// The head's keys are copied transposed (kT [hd, S]) so that the score loop runs over keys, which
// vectorises without reordering any sum; values are copied to a contiguous [S, hd].

namespace {

// Copies kv head g of batch b: rows [S, hd] into `rows` and, if wanted, transposed [hd, S] into `cols`.
void gather_head(const float* src, int64_t b, int64_t g, int64_t S, int64_t KV, int64_t hd, float* rows, float* cols) {
  for (int64_t s = 0; s < S; ++s) {
    const float* r = src + ((b * S + s) * KV + g) * hd;
    if (rows) std::copy(r, r + hd, rows + s * hd);
    if (cols)
      for (int64_t d = 0; d < hd; ++d) cols[d * S + s] = r[d];
  }
}

// dots[s] = sum_d a[d] * colsT[d, s] for s < n (colsT has row stride S); summed over d in order.
void dot_rows(const float* a, const float* colsT, int64_t n, int64_t S, int64_t hd, float* dots) {
  std::fill(dots, dots + n, 0.0f);
  for (int64_t d = 0; d < hd; ++d) {
    const float ad = a[d];
    const float* c = colsT + d * S;
    for (int64_t s = 0; s < n; ++s) dots[s] += ad * c[s];
  }
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse) {
  LINGUA_PROFILE_SCOPE("attention_forward");
#ifdef LINGUA_CUDA
  if (q.device == Device::cuda) return attention_forward_cuda(q, k, v, out, lse);
#endif
  const char* op = "attention_forward";
  check_f32(op, "q", q, {-1, -1, -1, -1});
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3);
  check_f32(op, "k", k, {B, -1, -1, hd});
  const int64_t S = k.size(1), KV = k.size(2);
  check_f32(op, "v", v, {B, S, KV, hd});
  check_f32(op, "out", out, {B, T, H, hd});
  if (is_given(lse)) check_f32(op, "lse", lse, {B, H, T});
  LINGUA_CHECK(KV > 0 && H % KV == 0, op, ": query heads (", H, ") must be a multiple of kv heads (", KV, ")");
  LINGUA_CHECK(S >= T, op, ": fewer keys (", S, ") than queries (", T, ")");
  LINGUA_CHECK(hd > 0, op, ": head_dim must be positive");
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt((float)hd);
  const float* qs = q.f32();
  const float* ks = k.f32();
  const float* vs = v.f32();
  float* os = out.f32();
  float* lses = is_given(lse) ? lse.f32() : nullptr;

  const int64_t work = B * H * T * S * hd;  // multiply-adds, about
#pragma omp parallel for collapse(2) schedule(static) if (work > 16 * kMinParallelElements)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      std::vector<float> kT(hd * S), vh(S * hd), score(S), acc(hd);
      gather_head(ks, b, g, S, KV, hd, nullptr, kT.data());
      gather_head(vs, b, g, S, KV, hd, vh.data(), nullptr);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = t + (S - T) + 1;  // keys 0 .. t + S - T
        const float* qrow = qs + ((b * T + t) * H + h) * hd;
        dot_rows(qrow, kT.data(), n, S, hd, score.data());
        float mx = -INFINITY;
        for (int64_t s = 0; s < n; ++s) {
          score[s] *= scale;
          mx = std::max(mx, score[s]);
        }
        double sum = 0;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t s = 0; s < n; ++s) {
          const float p = std::exp(score[s] - mx);
          sum += p;
          const float* vrow = vh.data() + s * hd;
          for (int64_t d = 0; d < hd; ++d) acc[d] += p * vrow[d];
        }
        const float inv = (float)(1.0 / sum);
        float* orow = os + ((b * T + t) * H + h) * hd;
        for (int64_t d = 0; d < hd; ++d) orow[d] = acc[d] * inv;
        if (lses) lses[(b * H + h) * T + t] = mx + (float)std::log(sum);
      }
    }
}

void attention_forward_cached(const Tensor& q, const Tensor& k, const Tensor& v, int64_t S, const Tensor& out) {
  LINGUA_PROFILE_SCOPE("attention_forward");
  const char* op = "attention_forward_cached";
  LINGUA_CHECK(q.ndim == 4 && k.ndim == 4, op, ": q [B, T, H, hd] and k [B, len, KV, hd], got ", q.str(), " and ",
               k.str());
  const int64_t B = q.size(0), len = k.size(1), KV = k.size(2), hd = k.size(3);
  check_shape(op, "v", v, {B, len, KV, hd});
  LINGUA_CHECK(S >= q.size(1) && S <= len, op, ": keys per sequence S = ", S, " must be in [T = ", q.size(1),
               ", len = ", len, "]");
#ifdef LINGUA_CUDA
  if (q.device == Device::cuda) return attention_forward_cached_cuda(q, k, v, S, out);
#endif
  check_f32(op, "k", k, {B, len, KV, hd});
  check_f32(op, "v", v, {B, len, KV, hd});
  // The keys of each sequence gathered into [B, S, KV, hd], then plain attention.
  const int64_t row = KV * hd;
  std::vector<float> ks((size_t)(B * S * row)), vs(ks.size());
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(k.f32() + b * len * row, S * row, ks.data() + b * S * row);
    std::copy_n(v.f32() + b * len * row, S * row, vs.data() + b * S * row);
  }
  attention_forward(q, Tensor(ks.data(), {B, S, KV, hd}), Tensor(vs.data(), {B, S, KV, hd}), out, Tensor());
}

// With p = softmax(scale * q k^T) recomputed as exp(score - lse):
//   dv_s += p_s dout_t;  dP_s = dout_t . v_s;  D_t = dout_t . out_t;  dS_s = p_s (dP_s - D_t)
//   dq_t = scale sum_s dS_s k_s;  dk_s += scale dS_s q_t
// dk / dv of a kv head sum over the query heads of its group, in head order.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  LINGUA_PROFILE_SCOPE("attention_backward");
#ifdef LINGUA_CUDA
  if (q.device == Device::cuda) return attention_backward_cuda(q, k, v, out, lse, dout, dq, dk, dv);
#endif
  const char* op = "attention_backward";
  check_f32(op, "q", q, {-1, -1, -1, -1});
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3);
  check_f32(op, "k", k, {B, -1, -1, hd});
  LINGUA_CHECK(k.size(1) == T, op,
               ": backward needs as many keys as queries (S == T, no KV cache), got S = ", k.size(1), ", T = ", T);
  const int64_t KV = k.size(2);
  check_f32(op, "v", v, {B, T, KV, hd});
  check_f32(op, "out", out, {B, T, H, hd});
  check_f32(op, "lse", lse, {B, H, T});
  check_f32(op, "dout", dout, {B, T, H, hd});
  check_f32(op, "dq", dq, {B, T, H, hd});
  check_f32(op, "dk", dk, {B, T, KV, hd});
  check_f32(op, "dv", dv, {B, T, KV, hd});
  LINGUA_CHECK(KV > 0 && H % KV == 0, op, ": query heads (", H, ") must be a multiple of kv heads (", KV, ")");
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt((float)hd);
  const float* qs = q.f32();
  const float* ks = k.f32();
  const float* vs = v.f32();
  const float* os = out.f32();
  const float* lses = lse.f32();
  const float* dos = dout.f32();
  float* dqs = dq.f32();
  float* dks = dk.f32();
  float* dvs = dv.f32();

  const int64_t work = B * H * T * T * hd;  // multiply-adds, about
#pragma omp parallel for collapse(2) schedule(static) if (work > 16 * kMinParallelElements)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < KV; ++g) {
      std::vector<float> kh(T * hd), kT(hd * T), vT(hd * T), dk_acc(T * hd, 0.0f), dv_acc(T * hd, 0.0f);
      std::vector<float> p(T), dS(T), dq_acc(hd);
      gather_head(ks, b, g, T, KV, hd, kh.data(), kT.data());
      gather_head(vs, b, g, T, KV, hd, nullptr, vT.data());
      for (int64_t h = g * group; h < (g + 1) * group; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t n = t + 1;
          const int64_t row = ((b * T + t) * H + h) * hd;
          const float* qrow = qs + row;
          const float* orow = os + row;
          const float* dorow = dos + row;
          const float row_lse = lses[(b * H + h) * T + t];
          dot_rows(qrow, kT.data(), n, T, hd, p.data());
          for (int64_t s = 0; s < n; ++s) p[s] = std::exp(p[s] * scale - row_lse);
          dot_rows(dorow, vT.data(), n, T, hd, dS.data());  // dP
          double Dt = 0;
          for (int64_t d = 0; d < hd; ++d) Dt += (double)dorow[d] * orow[d];
          for (int64_t s = 0; s < n; ++s) dS[s] = p[s] * (dS[s] - (float)Dt);

          std::fill(dq_acc.begin(), dq_acc.end(), 0.0f);
          for (int64_t s = 0; s < n; ++s) {
            const float ds = dS[s], ps = p[s], dss = scale * ds;
            const float* krow = kh.data() + s * hd;
            float* dkrow = dk_acc.data() + s * hd;
            float* dvrow = dv_acc.data() + s * hd;
            for (int64_t d = 0; d < hd; ++d) {
              dq_acc[d] += ds * krow[d];
              dkrow[d] += dss * qrow[d];
              dvrow[d] += ps * dorow[d];
            }
          }
          float* dqrow = dqs + row;
          for (int64_t d = 0; d < hd; ++d) dqrow[d] = scale * dq_acc[d];
        }
      for (int64_t s = 0; s < T; ++s) {
        const int64_t row = ((b * T + s) * KV + g) * hd;
        std::copy(dk_acc.data() + s * hd, dk_acc.data() + (s + 1) * hd, dks + row);
        std::copy(dv_acc.data() + s * hd, dv_acc.data() + (s + 1) * hd, dvs + row);
      }
    }
}

#ifndef LINGUA_CUDA
std::string attention_cudnn_refusal(int64_t, int64_t, bool) { return "built without CUDA"; }
#endif

}  // namespace lingua
