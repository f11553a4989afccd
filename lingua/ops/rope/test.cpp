#include <gtest/gtest.h>

#include <cmath>

#include "lingua/ops/rope/rope.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

constexpr double kTheta = 10000.0;

struct Case {
  int64_t B, T, H, hd;
};

Tensor view(std::vector<float>& x, Case c) { return Tensor(x.data(), {c.B, c.T, c.H, c.hd}); }

// Explicit rotation in double: pair (2i, 2i+1) of token t turns by (pos0 + t) / theta^(2i / hd).
std::vector<double> naive_rope(const std::vector<float>& x, Case c, int pos0) {
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = 0; i < c.hd / 2; ++i) {
          const double angle = (pos0 + t) / std::pow(kTheta, 2.0 * i / c.hd);
          const int64_t at = ((b * c.T + t) * c.H + h) * c.hd + 2 * i;
          const double x0 = x[at], x1 = x[at + 1];
          y[at] = x0 * std::cos(angle) - x1 * std::sin(angle);
          y[at + 1] = x0 * std::sin(angle) + x1 * std::cos(angle);
        }
  return y;
}

TEST(Rope, TableMatchesDoubleFormula) {
  const int max_pos = 257, hd = 10;
  auto table = rope_table(max_pos, hd, kTheta);
  ASSERT_EQ(table.half, hd / 2);
  ASSERT_EQ(table.cos.size(), (size_t)max_pos * hd / 2);
  for (int p = 0; p < max_pos; ++p)
    for (int i = 0; i < hd / 2; ++i) {
      const double angle = p / std::pow(kTheta, 2.0 * i / hd);
      // The fp32 angle is off by up to ~p * 2^-24 radians.
      EXPECT_NEAR(table.cos[p * hd / 2 + i], std::cos(angle), 1e-5) << p << "," << i;
      EXPECT_NEAR(table.sin[p * hd / 2 + i], std::sin(angle), 1e-5) << p << "," << i;
    }
}

TEST(Rope, ForwardMatchesExplicitRotation) {
  for (Case c : {Case{1, 1, 1, 2}, Case{2, 3, 6, 6}, Case{1, 33, 3, 10}, Case{3, 31, 12, 64}}) {
    for (int pos0 : {0, 7}) {
      auto table = rope_table(64, (int)c.hd, kTheta);
      auto x = random_vector(c.B * c.T * c.H * c.hd, 1);
      auto y = x;
      rope_forward(view(y, c), table, pos0);
      EXPECT_TRUE(close(y, naive_rope(x, c, pos0), 1e-5, "rope")) << c.T << " " << c.hd << " pos0 " << pos0;
    }
  }
}

TEST(Rope, BackwardInvertsForward) {
  const Case c{2, 33, 6, 10};
  auto table = rope_table(40, (int)c.hd, kTheta);
  auto x = random_vector(c.B * c.T * c.H * c.hd, 2);
  auto y = x;
  rope_forward(view(y, c), table, 5);
  rope_backward(view(y, c), table, 5);
  EXPECT_TRUE(close(y, x, 1e-6, "rope_backward(rope_forward(x))"));
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  for (Case c : {Case{1, 1, 1, 2}, Case{2, 3, 6, 6}, Case{1, 9, 2, 10}}) {
    auto table = rope_table(16, (int)c.hd, kTheta);
    auto x = random_vector(c.B * c.T * c.H * c.hd, 3);
    auto R = random_vector(x.size(), 4);
    std::vector<float> y;
    auto loss = [&] {
      y = x;
      rope_forward(view(y, c), table, 3);
      return dot(y, R);
    };
    auto numeric = numeric_gradient(x, loss);
    auto dx = R;
    rope_backward(view(dx, c), table, 3);
    EXPECT_TRUE(close(dx, numeric, 1e-3, "dx")) << c.T << " " << c.hd;
  }
}

TEST(Rope, Pos0ShiftsPositions) {
  // Rotating tokens 5.. of a sequence at pos0 = 0 equals rotating the suffix alone at pos0 = 5.
  const Case full{1, 12, 2, 6}, tail{1, 7, 2, 6};
  auto table = rope_table(12, 6, kTheta);
  auto x = random_vector(full.T * full.H * full.hd, 5);
  auto y_full = x;
  rope_forward(view(y_full, full), table, 0);
  std::vector<float> y_tail(x.begin() + 5 * full.H * full.hd, x.end());
  rope_forward(view(y_tail, tail), table, 5);
  std::vector<float> expected(y_full.begin() + 5 * full.H * full.hd, y_full.end());
  EXPECT_EQ(y_tail, expected);
}

// With a prefix, each sequence's first rows are left as they are and its token rows rotate as a
// sequence of their own starting at pos0: the same values as rope on the token rows alone.
TEST(Rope, PrefixRowsAreNotRotatedAndTokensStartAtPos0) {
  const Case c{3, 11, 2, 6};  // per sequence: 4 prefix rows, then 7 tokens
  const int64_t P = 4, T = c.T - P, row = c.H * c.hd;
  auto table = rope_table(32, (int)c.hd, kTheta);
  for (int pos0 : {0, 5})
    for (bool backward : {false, true}) {
      auto x = random_vector(c.B * c.T * row, 30 + pos0);
      std::vector<float> tokens;  // the token rows alone, [B, T, H, hd]
      for (int64_t b = 0; b < c.B; ++b)
        tokens.insert(tokens.end(), x.begin() + (b * c.T + P) * row, x.begin() + (b + 1) * c.T * row);
      std::vector<float> y = x;
      backward ? rope_backward(view(y, c), table, pos0, (int)P) : rope_forward(view(y, c), table, pos0, (int)P);
      const Case tc{c.B, T, c.H, c.hd};
      backward ? rope_backward(view(tokens, tc), table, pos0) : rope_forward(view(tokens, tc), table, pos0);
      for (int64_t b = 0; b < c.B; ++b) {
        for (int64_t i = 0; i < P * row; ++i) ASSERT_EQ(y[b * c.T * row + i], x[b * c.T * row + i]) << "prefix";
        for (int64_t i = 0; i < T * row; ++i) ASSERT_EQ(y[(b * c.T + P) * row + i], tokens[b * T * row + i]) << i;
      }
      EXPECT_NE(y, x);
    }
  std::vector<float> x(c.B * c.T * row);
  EXPECT_THROW(rope_forward(view(x, c), table, 0, (int)c.T + 1), Error);  // more prefix rows than rows
  EXPECT_THROW(rope_forward(view(x, c), table, 26, 4), Error);           // positions [26, 33) > max_pos 32
  EXPECT_NO_THROW(rope_forward(view(x, c), table, 26, 5));                // [26, 32)
}

TEST(Rope, Errors) {
  EXPECT_THROW(rope_table(16, 7, kTheta), Error);
  auto table = rope_table(16, 6, kTheta);
  auto x = random_vector(2 * 8 * 3 * 10, 6);
  EXPECT_THROW(rope_forward(Tensor(x.data(), {2, 8, 3, 10}), table), Error);  // hd differs from the table
  EXPECT_THROW(rope_forward(Tensor(x.data(), {2, 8, 3, 10 - 1}), table), Error);
  EXPECT_THROW(rope_forward(Tensor(x.data(), {2, 8, 5, 6}), table, 9), Error);  // positions 9..16 > max_pos
  EXPECT_NO_THROW(rope_forward(Tensor(x.data(), {2, 8, 5, 6}), table, 8));
  EXPECT_THROW(rope_forward(Tensor(x.data(), {16, 30}), table), Error);
  // An i32 tensor on the GPU: rejected without CUDA (no device) and with it (dtype).
  EXPECT_THROW(rope_backward(Tensor(x.data(), {2, 8, 5, 6}, DType::i32, Device::cuda), table), Error);
}

}  // namespace
