#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "lingua/ops/attention/attention.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Shape {
  int64_t B, T, S, H, KV, hd;
  int64_t q_size() const { return B * T * H * hd; }
  int64_t kv_size() const { return B * S * KV * hd; }
};

std::ostream& operator<<(std::ostream& os, Shape s) {
  return os << "B" << s.B << " T" << s.T << " S" << s.S << " H" << s.H << " KV" << s.KV << " hd" << s.hd;
}

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs random_inputs(Shape s, uint32_t seed) {
  return {random_vector(s.q_size(), seed, -2.0f, 2.0f), random_vector(s.kv_size(), seed + 1, -2.0f, 2.0f),
          random_vector(s.kv_size(), seed + 2)};
}

struct Forward {
  std::vector<float> out, lse;
};

Forward forward(Inputs& in, Shape s) {
  Forward f{std::vector<float>(s.q_size()), std::vector<float>(s.B * s.H * s.T)};
  attention_forward(Tensor(in.q.data(), {s.B, s.T, s.H, s.hd}), Tensor(in.k.data(), {s.B, s.S, s.KV, s.hd}),
                    Tensor(in.v.data(), {s.B, s.S, s.KV, s.hd}), Tensor(f.out.data(), {s.B, s.T, s.H, s.hd}),
                    Tensor(f.lse.data(), {s.B, s.H, s.T}));
  return f;
}

struct Grads {
  std::vector<float> dq, dk, dv;
};

Grads backward(Inputs& in, Forward& f, std::vector<float>& dout, Shape s) {
  Grads g{std::vector<float>(s.q_size(), 9.0f), std::vector<float>(s.kv_size(), 9.0f),
          std::vector<float>(s.kv_size(), 9.0f)};
  attention_backward(Tensor(in.q.data(), {s.B, s.T, s.H, s.hd}), Tensor(in.k.data(), {s.B, s.S, s.KV, s.hd}),
                     Tensor(in.v.data(), {s.B, s.S, s.KV, s.hd}), Tensor(f.out.data(), {s.B, s.T, s.H, s.hd}),
                     Tensor(f.lse.data(), {s.B, s.H, s.T}), Tensor(dout.data(), {s.B, s.T, s.H, s.hd}),
                     Tensor(g.dq.data(), {s.B, s.T, s.H, s.hd}), Tensor(g.dk.data(), {s.B, s.S, s.KV, s.hd}),
                     Tensor(g.dv.data(), {s.B, s.S, s.KV, s.hd}));
  return g;
}

// Full softmax over all S keys in double, masked keys at -inf.
void naive_attention(const Inputs& in, Shape s, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(s.q_size(), 0.0);
  lse.assign(s.B * s.H * s.T, 0.0);
  const double scale = 1.0 / std::sqrt((double)s.hd);
  std::vector<double> score(s.S);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t t = 0; t < s.T; ++t) {
        const int64_t g = h / (s.H / s.KV);
        const float* q = &in.q[((b * s.T + t) * s.H + h) * s.hd];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < s.S; ++j) {
          const float* k = &in.k[((b * s.S + j) * s.KV + g) * s.hd];
          double d = 0;
          for (int64_t c = 0; c < s.hd; ++c) d += (double)q[c] * k[c];
          score[j] = j <= t + (s.S - s.T) ? d * scale : -std::numeric_limits<double>::infinity();
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < s.S; ++j) sum += std::exp(score[j] - mx);
        lse[(b * s.H + h) * s.T + t] = mx + std::log(sum);
        for (int64_t j = 0; j < s.S; ++j) {
          const double p = std::exp(score[j] - mx) / sum;
          const float* v = &in.v[((b * s.S + j) * s.KV + g) * s.hd];
          for (int64_t c = 0; c < s.hd; ++c) out[((b * s.T + t) * s.H + h) * s.hd + c] += p * v[c];
        }
      }
}

TEST(Attention, ForwardMatchesNaiveSoftmax) {
  for (Shape s : {Shape{1, 1, 1, 1, 1, 2}, Shape{2, 3, 3, 6, 2, 6}, Shape{1, 33, 33, 6, 1, 10},
                  Shape{2, 31, 31, 6, 6, 6}, Shape{2, 5, 13, 6, 2, 6}, Shape{1, 1, 31, 6, 1, 10}}) {
    auto in = random_inputs(s, 1);
    auto f = forward(in, s);
    std::vector<double> out, lse;
    naive_attention(in, s, out, lse);
    EXPECT_TRUE(close(f.out, out, 1e-5, "out")) << s;
    EXPECT_TRUE(close(f.lse, lse, 1e-6, "lse")) << s;
  }
}

TEST(Attention, ForwardWithoutLse) {
  const Shape s{2, 5, 13, 6, 2, 6};
  auto in = random_inputs(s, 2);
  auto f = forward(in, s);
  std::vector<float> out(s.q_size());
  attention_forward(Tensor(in.q.data(), {s.B, s.T, s.H, s.hd}), Tensor(in.k.data(), {s.B, s.S, s.KV, s.hd}),
                    Tensor(in.v.data(), {s.B, s.S, s.KV, s.hd}), Tensor(out.data(), {s.B, s.T, s.H, s.hd}), Tensor());
  EXPECT_EQ(out, f.out);
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  for (Shape s : {Shape{1, 1, 1, 1, 1, 2}, Shape{2, 3, 3, 6, 2, 6}, Shape{1, 33, 33, 6, 2, 6},
                  Shape{1, 17, 17, 6, 1, 10}, Shape{2, 9, 9, 3, 3, 4}}) {
    auto in = random_inputs(s, 3);
    auto R = random_vector(s.q_size(), 4);
    auto loss = [&] { return dot(forward(in, s).out, R); };
    auto num_dq = numeric_gradient(in.q, loss);
    auto num_dk = numeric_gradient(in.k, loss);
    auto num_dv = numeric_gradient(in.v, loss);
    auto f = forward(in, s);
    auto g = backward(in, f, R, s);
    EXPECT_TRUE(close(g.dq, num_dq, 5e-3, "dq")) << s;
    EXPECT_TRUE(close(g.dk, num_dk, 5e-3, "dk")) << s;
    EXPECT_TRUE(close(g.dv, num_dv, 5e-3, "dv")) << s;
  }
}

TEST(Attention, IsCausal) {
  const Shape s{2, 17, 17, 6, 2, 6};
  const int64_t s0 = 9;  // keys / values from here on are changed
  auto in = random_inputs(s, 5);
  auto before = forward(in, s);
  auto changed = in;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = s0 * s.KV * s.hd; i < s.S * s.KV * s.hd; ++i) {
      changed.k[b * s.S * s.KV * s.hd + i] += 0.5f;
      changed.v[b * s.S * s.KV * s.hd + i] -= 0.5f;
    }
  auto after = forward(changed, s);
  const int64_t row = s.H * s.hd;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t) {
      bool same = true;
      for (int64_t i = 0; i < row; ++i)
        same &= after.out[(b * s.T + t) * row + i] == before.out[(b * s.T + t) * row + i];
      EXPECT_EQ(same, t < s0) << "b " << b << " t " << t;
    }

  // A gradient only on rows before s0 gives no gradient to the keys / values at or after s0.
  std::vector<float> dout(s.q_size(), 0.0f);
  auto R = random_vector(s.q_size(), 6);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s0 * row; ++i) dout[b * s.T * row + i] = R[b * s.T * row + i];
  auto g = backward(in, before, dout, s);
  const int64_t kv_row = s.KV * s.hd;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = s0 * kv_row; i < s.S * kv_row; ++i) {
      ASSERT_EQ(g.dk[b * s.S * kv_row + i], 0.0f) << i;
      ASSERT_EQ(g.dv[b * s.S * kv_row + i], 0.0f) << i;
    }
}

// Copies head h of a [B, T, H, hd] tensor into a [B, T, 1, hd] one.
std::vector<float> head_slice(const std::vector<float>& x, int64_t B, int64_t T, int64_t H, int64_t hd, int64_t h) {
  std::vector<float> y(B * T * hd);
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t c = 0; c < hd; ++c) y[bt * hd + c] = x[(bt * H + h) * hd + c];
  return y;
}

TEST(Attention, KvEqualsHIsPerHeadAttention) {
  const Shape s{2, 11, 11, 3, 3, 6}, one{2, 11, 11, 1, 1, 6};
  auto in = random_inputs(s, 7);
  auto dout = random_vector(s.q_size(), 8);
  auto f = forward(in, s);
  auto g = backward(in, f, dout, s);
  for (int64_t h = 0; h < s.H; ++h) {
    Inputs in_h{head_slice(in.q, s.B, s.T, s.H, s.hd, h), head_slice(in.k, s.B, s.S, s.KV, s.hd, h),
                head_slice(in.v, s.B, s.S, s.KV, s.hd, h)};
    auto dout_h = head_slice(dout, s.B, s.T, s.H, s.hd, h);
    auto f_h = forward(in_h, one);
    auto g_h = backward(in_h, f_h, dout_h, one);
    EXPECT_EQ(head_slice(f.out, s.B, s.T, s.H, s.hd, h), f_h.out) << h;
    EXPECT_EQ(head_slice(g.dq, s.B, s.T, s.H, s.hd, h), g_h.dq) << h;
    EXPECT_EQ(head_slice(g.dk, s.B, s.S, s.KV, s.hd, h), g_h.dk) << h;
    EXPECT_EQ(head_slice(g.dv, s.B, s.S, s.KV, s.hd, h), g_h.dv) << h;
  }
}

TEST(Attention, GqaEqualsRepeatedKvHeads) {
  for (int64_t KV : {1, 2}) {
    const Shape s{2, 13, 13, 6, KV, 6}, rep{2, 13, 13, 6, 6, 6};
    const int64_t group = s.H / KV;
    auto in = random_inputs(s, 9);
    Inputs in_rep{in.q, std::vector<float>(rep.kv_size()), std::vector<float>(rep.kv_size())};
    for (int64_t bs = 0; bs < s.B * s.S; ++bs)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t c = 0; c < s.hd; ++c) {
          in_rep.k[(bs * s.H + h) * s.hd + c] = in.k[(bs * KV + h / group) * s.hd + c];
          in_rep.v[(bs * s.H + h) * s.hd + c] = in.v[(bs * KV + h / group) * s.hd + c];
        }
    auto dout = random_vector(s.q_size(), 10);
    auto f = forward(in, s);
    auto f_rep = forward(in_rep, rep);
    EXPECT_EQ(f.out, f_rep.out);
    EXPECT_EQ(f.lse, f_rep.lse);
    auto g = backward(in, f, dout, s);
    auto g_rep = backward(in_rep, f_rep, dout, rep);
    EXPECT_EQ(g.dq, g_rep.dq);
    // dk / dv of a kv head: the sum over its group's query heads.
    std::vector<float> dk_sum(s.kv_size(), 0.0f), dv_sum(s.kv_size(), 0.0f);
    for (int64_t bs = 0; bs < s.B * s.S; ++bs)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t c = 0; c < s.hd; ++c) {
          dk_sum[(bs * KV + h / group) * s.hd + c] += g_rep.dk[(bs * s.H + h) * s.hd + c];
          dv_sum[(bs * KV + h / group) * s.hd + c] += g_rep.dv[(bs * s.H + h) * s.hd + c];
        }
    EXPECT_TRUE(close(g.dk, dk_sum, 1e-5, "dk")) << s;
    EXPECT_TRUE(close(g.dv, dv_sum, 1e-5, "dv")) << s;
  }
}

TEST(Attention, CachePathEqualsLastRowsOfFullAttention) {
  for (Shape s : {Shape{2, 5, 13, 6, 2, 6}, Shape{1, 1, 31, 6, 1, 10}, Shape{1, 4, 4, 2, 2, 6}}) {
    const Shape full{s.B, s.S, s.S, s.H, s.KV, s.hd};
    auto in_full = random_inputs(full, 11);
    auto f_full = forward(in_full, full);
    // The cache call: the last T queries against all S keys.
    Inputs in = in_full;
    in.q.clear();
    const int64_t row = s.H * s.hd;
    for (int64_t b = 0; b < s.B; ++b)
      in.q.insert(in.q.end(), in_full.q.begin() + (b * s.S + s.S - s.T) * row, in_full.q.begin() + (b + 1) * s.S * row);
    auto f = forward(in, s);
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t t = 0; t < s.T; ++t)
        for (int64_t i = 0; i < row; ++i)
          ASSERT_NEAR(f.out[(b * s.T + t) * row + i], f_full.out[(b * s.S + s.S - s.T + t) * row + i], 1e-6) << s;
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t t = 0; t < s.T; ++t)
          ASSERT_NEAR(f.lse[(b * s.H + h) * s.T + t], f_full.lse[(b * s.H + h) * s.S + s.S - s.T + t], 1e-6) << s;
    }
  }
}

TEST(Attention, IndependentOfThreadCount) {
  const Shape s{2, 65, 65, 6, 2, 64};  // large enough for the parallel path
  auto in = random_inputs(s, 12);
  auto dout = random_vector(s.q_size(), 13);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto f1 = forward(in, s);
  auto g1 = backward(in, f1, dout, s);
  omp_set_num_threads(3);
  auto f3 = forward(in, s);
  auto g3 = backward(in, f3, dout, s);
  omp_set_num_threads(saved);
  EXPECT_EQ(f1.out, f3.out);
  EXPECT_EQ(f1.lse, f3.lse);
  EXPECT_EQ(g1.dq, g3.dq);
  EXPECT_EQ(g1.dk, g3.dk);
  EXPECT_EQ(g1.dv, g3.dv);
}

TEST(Attention, Errors) {
  const Shape s{1, 4, 4, 6, 2, 6};
  auto in = random_inputs(s, 14);
  auto f = forward(in, s);
  std::vector<float> buf(s.q_size() * 4);
  Tensor q(in.q.data(), {1, 4, 6, 6}), k(in.k.data(), {1, 4, 2, 6}), v(in.v.data(), {1, 4, 2, 6});
  Tensor out(f.out.data(), {1, 4, 6, 6}), lse(f.lse.data(), {1, 6, 4});
  Tensor dq(buf.data(), {1, 4, 6, 6}), dk(buf.data(), {1, 4, 2, 6}), dv(buf.data(), {1, 4, 2, 6});
  // H = 6 is not a multiple of KV = 4
  EXPECT_THROW(
      attention_forward(q, Tensor(in.k.data(), {1, 2, 4, 6}), Tensor(in.v.data(), {1, 2, 4, 6}), out, Tensor()), Error);
  // fewer keys than queries
  EXPECT_THROW(
      attention_forward(q, Tensor(in.k.data(), {1, 2, 2, 6}), Tensor(in.v.data(), {1, 2, 2, 6}), out, Tensor()), Error);
  // head_dim mismatch, lse of the wrong shape
  EXPECT_THROW(attention_forward(q, Tensor(in.k.data(), {1, 4, 2, 5}), v, out, Tensor()), Error);
  EXPECT_THROW(attention_forward(q, k, v, out, Tensor(f.lse.data(), {1, 4, 6})), Error);
  // backward has no KV cache: S must equal T
  std::vector<float> k8(1 * 8 * 2 * 6), v8(1 * 8 * 2 * 6);
  EXPECT_THROW(attention_backward(q, Tensor(k8.data(), {1, 8, 2, 6}), Tensor(v8.data(), {1, 8, 2, 6}), out, lse, out,
                                  dq, Tensor(k8.data(), {1, 8, 2, 6}), Tensor(v8.data(), {1, 8, 2, 6})),
               Error);
  EXPECT_THROW(attention_backward(q, k, v, out, lse, out, dq, dk, Tensor(buf.data(), {1, 4, 6, 6})), Error);
  EXPECT_NO_THROW(attention_backward(q, k, v, out, lse, out, dq, dk, dv));
  EXPECT_THROW(attention_forward(Tensor(in.q.data(), {1, 4, 6, 6}, DType::f32, Device::cuda), k, v, out, lse), Error);
}

}  // namespace
