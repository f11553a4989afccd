#include <gtest/gtest.h>
#include <omp.h>

#include "lingua/ops/embedding/embedding.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, V, D;
};

TEST(Embedding, ForwardCopiesRows) {
  for (Case c : {Case{1, 1, 1}, Case{3, 7, 5}, Case{33, 11, 31}, Case{300, 13, 129}}) {
    auto table = random_vector(c.V * c.D, 1);
    auto ids = random_ints(c.N, 2, 0, (int32_t)c.V - 1);
    std::vector<float> out(c.N * c.D, 7.0f);
    embedding_forward(Tensor(ids.data(), {c.N}), Tensor(table.data(), {c.V, c.D}), Tensor(out.data(), {c.N, c.D}));
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t j = 0; j < c.D; ++j) ASSERT_EQ(out[n * c.D + j], table[ids[n] * c.D + j]) << n << "," << j;
  }
}

TEST(Embedding, BackwardAccumulatesInRowOrder) {
  // Large enough to take the parallel path; few ids so that rows repeat often.
  for (Case c : {Case{1, 1, 1}, Case{3, 7, 5}, Case{33, 4, 31}, Case{300, 13, 129}}) {
    auto ids = random_ints(c.N, 3, 0, (int32_t)c.V - 1);
    auto dout = random_vector(c.N * c.D, 4);
    auto dtable = random_vector(c.V * c.D, 5);
    auto expected = dtable;
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t j = 0; j < c.D; ++j) expected[ids[n] * c.D + j] += dout[n * c.D + j];
    embedding_backward(Tensor(ids.data(), {c.N}), Tensor(dout.data(), {c.N, c.D}), Tensor(dtable.data(), {c.V, c.D}));
    // Same additions in the same order: bitwise equal.
    for (size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(dtable[i], expected[i]) << i;
  }
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int64_t N = 9, V = 5, D = 7;
  auto table = random_vector(V * D, 6);
  auto ids = random_ints(N, 7, 0, V - 1);
  auto R = random_vector(N * D, 8);
  std::vector<float> out(N * D);
  auto loss = [&] {
    embedding_forward(Tensor(ids.data(), {N}), Tensor(table.data(), {V, D}), Tensor(out.data(), {N, D}));
    return dot(out, R);
  };
  auto numeric = numeric_gradient(table, loss);
  std::vector<float> dtable(V * D, 0.0f);
  embedding_backward(Tensor(ids.data(), {N}), Tensor(R.data(), {N, D}), Tensor(dtable.data(), {V, D}));
  EXPECT_TRUE(close(dtable, numeric, 1e-3, "dtable"));
}

TEST(Embedding, BackwardIsIndependentOfThreadCount) {
  const int64_t N = 257, V = 3, D = 301;
  auto ids = random_ints(N, 9, 0, V - 1);
  auto dout = random_vector(N * D, 10);
  std::vector<float> one(V * D, 0.5f), many(V * D, 0.5f);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  embedding_backward(Tensor(ids.data(), {N}), Tensor(dout.data(), {N, D}), Tensor(one.data(), {V, D}));
  omp_set_num_threads(3);
  embedding_backward(Tensor(ids.data(), {N}), Tensor(dout.data(), {N, D}), Tensor(many.data(), {V, D}));
  omp_set_num_threads(threads);
  EXPECT_EQ(one, many);
}

TEST(Embedding, OutOfRangeIdIsAnError) {
  const int64_t N = 4, V = 5, D = 3;
  auto table = random_vector(V * D, 11);
  std::vector<float> out(N * D), dtable(V * D, 0.0f);
  for (int32_t bad : {5, -1, 1000}) {
    std::vector<int32_t> ids = {0, 4, bad, 1};
    EXPECT_THROW(embedding_forward(Tensor(ids.data(), {N}), Tensor(table.data(), {V, D}), Tensor(out.data(), {N, D})),
                 Error);
    EXPECT_THROW(embedding_backward(Tensor(ids.data(), {N}), Tensor(out.data(), {N, D}), Tensor(dtable.data(), {V, D})),
                 Error);
    try {
      embedding_forward(Tensor(ids.data(), {N}), Tensor(table.data(), {V, D}), Tensor(out.data(), {N, D}));
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::to_string(bad)), std::string::npos) << msg;
    }
  }
  // Nothing was accumulated by the failed backward calls.
  for (float x : dtable) EXPECT_EQ(x, 0.0f);
}

TEST(Embedding, ShapeAndDeviceErrors) {
  const int64_t N = 4, V = 5, D = 3;
  auto table = random_vector(V * D, 12);
  std::vector<int32_t> ids = {0, 1, 2, 3};
  std::vector<float> out(N * (D + 1));
  EXPECT_THROW(embedding_forward(Tensor(ids.data(), {N}), Tensor(table.data(), {V, D}), Tensor(out.data(), {N, D + 1})),
               Error);
  EXPECT_THROW(embedding_forward(Tensor(ids.data(), {N - 1}), Tensor(table.data(), {V, D}), Tensor(out.data(), {N, D})),
               Error);
  // ids passed as f32
  EXPECT_THROW(embedding_forward(Tensor(table.data(), {N}), Tensor(table.data(), {V, D}), Tensor(out.data(), {N, D})),
               Error);
  try {
    embedding_forward(Tensor(ids.data(), {N}), Tensor(table.data(), {V, D}), Tensor(out.data(), {N, D + 1}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("embedding_forward: argument 'out'"), std::string::npos) << e.what();
  }
  Tensor on_gpu(table.data(), {V, D}, DType::f32, Device::cuda);
  EXPECT_THROW(embedding_forward(Tensor(ids.data(), {N}), on_gpu, Tensor(out.data(), {N, D})), Error);
}

}  // namespace
