// GPU block-diagonal linear layer against the CPU reference (the op-test harness), odd sizes,
// bf16 and f32, misaligned, every kind of layout; determinism.
#include <gtest/gtest.h>

#include <limits>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/blockdiag/blockdiag.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, k, o, i;
};
const Case kCases[] = {{1, 1, 1, 1}, {3, 2, 5, 3}, {31, 3, 17, 9}, {33, 4, 33, 65}, {257, 2, 64, 128},
                       {129, 4, 384, 256}};

struct Dtypes {
  DType in, out;
};
const Dtypes kDtypes[] = {{DType::bf16, DType::bf16}, {DType::bf16, DType::f32}, {DType::f32, DType::f32}};
double tolerance(Dtypes d) { return d.out == DType::bf16 ? 1e-2 : d.in == DType::bf16 ? 1e-4 : 1e-5; }

// The layouts of x / dx and y / dy: the usual one and BlockShuffle's (features out of its first
// factor, read interleaved by its second), and one more mixed pair; BlockShuffle's pairs also with
// the feature-major side wider than N: aligned (feature_major_width, as BlockShuffle runs) and 5
// wider. The extra columns hold NaN in inputs (never read) and 7 in outputs (never written; such
// an output is given as accumulated, so that both sides start from the same values).
struct Layouts {
  BlockLayout x, y;
  int pad;  // -1: L = N; 0: L = feature_major_width(N); else L = N + pad
};
const Layouts kLayouts[] = {{BlockLayout::rows, BlockLayout::rows, -1},
                            {BlockLayout::rows, BlockLayout::features, -1},
                            {BlockLayout::interleaved, BlockLayout::rows, -1},
                            {BlockLayout::features, BlockLayout::interleaved, -1},
                            {BlockLayout::rows, BlockLayout::features, 0},
                            {BlockLayout::interleaved, BlockLayout::rows, 5}};
int64_t width_of(int64_t N, Layouts l) { return l.pad < 0 ? N : l.pad == 0 ? feature_major_width(N) : N + l.pad; }
std::vector<int64_t> shape_of(int64_t N, int64_t width, BlockLayout layout, int64_t L) {
  return layout == BlockLayout::rows ? std::vector<int64_t>{N, width} : std::vector<int64_t>{width, L};
}
std::string name_of(Layouts l) {
  const char* names[] = {"rows", "features", "interleaved"};
  return std::string(names[(int)l.x]) + "_" + names[(int)l.y] + (l.pad < 0 ? "" : " padded" + std::to_string(l.pad));
}
// Random values of a [width, L] (or rows) tensor with `pad_value` in the columns N .. L.
std::vector<float> padded_values(int64_t N, int64_t width, BlockLayout layout, int64_t L, uint32_t seed,
                                 float pad_value) {
  std::vector<float> v = random_vector(width * (layout == BlockLayout::rows ? N : L), seed);
  if (layout != BlockLayout::rows)
    for (int64_t r = 0; r < width; ++r)
      for (int64_t n = N; n < L; ++n) v[r * L + n] = pad_value;
  return v;
}

std::vector<OpCase> cases() {
  std::vector<OpCase> cs;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  uint32_t seed = 1;
  for (Case c : kCases)
    for (Dtypes d : kDtypes)
      for (Layouts l : kLayouts) {
        const int64_t L = width_of(c.N, l);
        const bool padded = L != c.N;
        const std::vector<int64_t> xs = shape_of(c.N, c.k * c.i, l.x, L), ys = shape_of(c.N, c.k * c.o, l.y, L);
        auto input = [&](TensorSpec& t, int64_t width, BlockLayout layout) {
          if (padded && layout != BlockLayout::rows)
            t.values(padded_values(c.N, width, layout, L, seed++, nan));
          else
            t.uniform(-1.0f, 1.0f, seed++);
        };
        auto output = [&](TensorSpec& t, int64_t width, BlockLayout layout) {
          if (padded && layout != BlockLayout::rows)
            t.accumulated().values(padded_values(c.N, width, layout, L, seed++, 7.0f));
        };
        OpCase& f = cs.emplace_back("blockdiag_forward", name_of(l));
        input(f.in("x", xs, d.in), c.k * c.i, l.x);
        f.in("w", {c.k, c.o, c.i}, d.in).uniform(-1.0f, 1.0f, seed++);
        output(f.out("y", ys, d.out).tol(tolerance(d)), c.k * c.o, l.y);
        f.run = [l](OpArgs& a) { blockdiag_forward(a["x"], a["w"], a["y"], l.x, l.y); };
        for (bool accumulate : {false, true}) {
          OpCase& b = cs.emplace_back("blockdiag_backward", name_of(l) + (accumulate ? " accumulate_dx" : ""));
          input(b.in("x", xs, d.in).offset(accumulate ? 0 : 1), c.k * c.i, l.x);
          b.in("w", {c.k, c.o, c.i}, d.in).uniform(-1.0f, 1.0f, seed++);
          input(b.in("dy", ys, d.in), c.k * c.o, l.y);
          TensorSpec& dx = b.out("dx", xs, d.out).tol(tolerance(d));
          if (accumulate && !(padded && l.x != BlockLayout::rows)) dx.accumulated().uniform(-1.0f, 1.0f, seed++);
          output(dx, c.k * c.i, l.x);
          b.out("dw", {c.k, c.o, c.i}).accumulated().uniform(-1.0f, 1.0f, seed++).tol(tolerance({d.in, DType::f32}));
          b.run = [accumulate, l](OpArgs& a) {
            blockdiag_backward(a["x"], a["w"], a["dy"], a["dx"], a["dw"], accumulate, l.x, l.y);
          };
        }
      }
  return cs;
}

LINGUA_OP_TEST(BlockDiag, ForwardAndBackwardMatchCpu, cases())

TEST(BlockDiagCuda, Deterministic) {
  LINGUA_REQUIRE_GPU();
  const int64_t N = 513, k = 4, o = 96, i = 160;
  DeviceTensor x({N, k * i}, DType::bf16), w({k, o, i}, DType::bf16), dy({N, k * o}, DType::bf16),
      dx({N, k * i}, DType::bf16), dw({k, o, i}, DType::f32);
  x.upload(as_dtype(random_vector(N * k * i, 1), DType::bf16));
  w.upload(as_dtype(random_vector(k * o * i, 2), DType::bf16));
  dy.upload(as_dtype(random_vector(N * k * o, 3), DType::bf16));
  std::vector<float> first_dx, first_dw;
  for (int run = 0; run < 2; ++run) {
    dw.upload(std::vector<float>(k * o * i, 0.0f));
    blockdiag_backward(x.t, w.t, dy.t, dx.t, dw.t);
    if (run == 0) {
      first_dx = dx.download(), first_dw = dw.download();
    } else {
      EXPECT_TRUE(same_bits(first_dx, dx.download(), "dx"));
      EXPECT_TRUE(same_bits(first_dw, dw.download(), "dw"));
    }
  }
}

}  // namespace
