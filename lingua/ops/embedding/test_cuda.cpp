// Embedding on CUDA against the CPU reference (the op-test harness): forward copies rows exactly
// (with the dtype conversion), backward is bitwise equal to the CPU's in-order sums.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/embedding/embedding.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

struct Case {
  int64_t N, V, D;
};

// Rows copied exactly (converted to out's dtype).
std::vector<OpCase> forward_cases() {
  std::vector<OpCase> cs;
  for (Case c : {Case{1, 1, 1}, Case{31, 7, 33}, Case{33, 11, 1023}, Case{257, 13, 1024}, Case{31, 50, 4096}})
    for (DType tt : {DType::f32, DType::bf16})
      for (DType ot : {DType::f32, DType::bf16})
        for (int64_t offset : {0, 1}) {  // offset 1: misaligned table, element by element
          if (offset && c.D % 8) continue;
          OpCase& k = cs.emplace_back("embedding_forward");
          k.in("ids", {c.N}, DType::i32).ints(0, (int32_t)c.V - 1, 2);
          k.in("table", {c.V, c.D}, tt).uniform(-1.0f, 1.0f, 1).offset(offset);
          k.out("out", {c.N, c.D}, ot).exact();
          k.run = [](OpArgs& a) {
            embedding_forward(a["ids"], a["table"], a["out"]);
            embedding_check_errors();
          };
        }
  return cs;
}

// The same additions in the same order as the CPU: bitwise equal (and so equal run to run). bf16
// dout is widened exactly. calls 2: a second call adds the same rows again, as the CPU does.
std::vector<OpCase> backward_cases() {
  std::vector<OpCase> cs;
  // Few ids: long runs of repeated ids (past the 8-row unrolled loop); many ids: mostly single rows.
  for (Case c : {Case{1, 1, 1}, Case{33, 4, 31}, Case{257, 3, 1023}, Case{4099, 5, 1024}, Case{300, 13, 129},
                 Case{2000, 1000, 64}, Case{4099, 2, 33}})
    for (DType dt : {DType::f32, DType::bf16})
      for (int64_t offset : {0, 1})  // offset 1: misaligned dout, the scalar path
        for (int calls : {1, 2}) {
          if (offset && c.D % 4) continue;
          OpCase& k = cs.emplace_back("embedding_backward", "calls " + std::to_string(calls));
          k.in("ids", {c.N}, DType::i32).ints(0, (int32_t)c.V - 1, 3);
          k.in("dout", {c.N, c.D}, dt).uniform(-1.0f, 1.0f, 4).offset(offset);
          k.out("dtable", {c.V, c.D}).accumulated().uniform(-1.0f, 1.0f, 5).exact();
          k.run = [calls](OpArgs& a) {
            for (int i = 0; i < calls; ++i) embedding_backward(a["ids"], a["dout"], a["dtable"]);
            embedding_check_errors();
          };
        }
  return cs;
}

LINGUA_OP_TEST(Embedding, ForwardCopiesRows, forward_cases())
LINGUA_OP_TEST(Embedding, BackwardIsBitwiseEqualToCpuAndDeterministic, backward_cases())

TEST(EmbeddingCuda, OutOfRangeIdIsReportedByCheckErrors) {
  LINGUA_REQUIRE_GPU();
  const int64_t N = 5, V = 5, D = 8;
  auto table = random_vector(V * D, 6);
  auto dout = random_vector(N * D, 7);
  for (int32_t bad : {5, -1, 1000, INT32_MIN}) {
    for (bool backward : {false, true}) {
      std::vector<int32_t> ids = {0, 4, bad, 1, bad};
      DeviceTensor d_ids({N}, DType::i32), d_table({V, D}, DType::f32), d_out({N, D}, DType::bf16), d_dout({N, D}, DType::f32),
          d_dtable({V, D}, DType::f32);
      d_ids.upload(ids);
      d_table.upload(table);
      d_dout.upload(dout);
      d_dtable.upload(std::vector<float>(V * D, 0.0f));
      d_out.poison();
      if (backward)
        EXPECT_NO_THROW(embedding_backward(d_ids.t, d_dout.t, d_dtable.t));  // reported later
      else
        EXPECT_NO_THROW(embedding_forward(d_ids.t, d_table.t, d_out.t));
      std::string msg;
      try {
        embedding_check_errors();
      } catch (const Error& e) {
        msg = e.what();
      }
      ASSERT_FALSE(msg.empty()) << "bad id " << bad << " not reported";
      EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;  // the first bad position
      EXPECT_NE(msg.find("id " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find(backward ? "embedding_backward" : "embedding_forward"), std::string::npos) << msg;
      EXPECT_NO_THROW(embedding_check_errors()) << "the record is cleared";
      if (backward) {
        // The valid rows were accumulated, the bad ones skipped.
        std::vector<float> want(V * D, 0.0f);
        for (int n : {0, 1, 3})
          for (int64_t j = 0; j < D; ++j) want[ids[n] * D + j] += dout[n * D + j];
        EXPECT_EQ(d_dtable.download(), want);
      } else {
        const auto out = d_out.download();
        for (int64_t n = 0; n < N; ++n)
          for (int64_t j = 0; j < D; ++j) {
            const float want = (n == 2 || n == 4) ? 0.0f : round_to_bf16(table[ids[n] * D + j]);
            ASSERT_EQ(out[n * D + j], want) << n << "," << j;
          }
      }
    }
  }
}

TEST(EmbeddingCuda, Errors) {
  LINGUA_REQUIRE_GPU();
  const int64_t N = 4, V = 5, D = 8;
  DeviceTensor ids({N}, DType::i32), ids_f({N}, DType::f32), table({V, D}, DType::bf16), out({N, D}, DType::f32),
      out_i({N, D}, DType::i32), dtable({V, D}, DType::f32);
  EXPECT_THROW(embedding_forward(ids_f.t, table.t, out.t), Error);  // ids f32
  EXPECT_THROW(embedding_forward(ids.t, table.t, out_i.t), Error);  // out i32
  EXPECT_THROW(embedding_forward(ids.t, table.t, Tensor(out.t.data, {N, D - 1}, DType::f32, Device::cuda)), Error);
  try {
    embedding_forward(ids.t, table.t, out_i.t);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("embedding_forward: argument 'out'"), std::string::npos) << e.what();
  }
  std::vector<float> host(N * D);
  EXPECT_THROW(embedding_forward(ids.t, table.t, Tensor(host.data(), {N, D})), Error);  // out on the CPU
  EXPECT_THROW(embedding_backward(ids.t, ids.t, dtable.t), Error);                       // dout i32
  EXPECT_THROW(embedding_backward(ids.t, out.t, table.t), Error);                        // dtable bf16
  EXPECT_THROW(embedding_backward(ids.t, Tensor(out.t.data, {N + 1, D}, DType::f32, Device::cuda), dtable.t), Error);
  cuda_synchronize();
  EXPECT_NO_THROW(embedding_check_errors());
}

}  // namespace
