// The op-test harness (backend_test.h) catches what it promises to: elements left unwritten,
// modified inputs, backends that differ from the reference, errors out of tolerance, missing
// scalars and exceptions. Runs on the CPU backend, so it needs no GPU.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include "lingua/ops/backend_test.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

// The failure messages fn() reports, intercepted (they do not fail this test).
template <class F>
std::string failures(F&& fn) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    fn();
  }
  std::string all;
  for (int i = 0; i < results.size(); ++i) all += std::string(results.GetTestPartResult(i).message()) + "\n";
  return all;
}

#define EXPECT_FAILS_WITH(statement, part)                        \
  do {                                                            \
    const std::string msg = failures([&] { statement; });         \
    EXPECT_NE(msg.find(part), std::string::npos) << "got: " << msg; \
  } while (0)

// y = 2 x on f32 host tensors; `skip` leaves y[skip] unwritten, `poke` writes x[0].
OpCase twice_case(int64_t n, int64_t skip = -1, bool poke = false) {
  OpCase c("twice");
  c.in("x", {n}, DType::bf16).offset(1);
  c.out("y", {n});
  c.out("acc", {n}).accumulated().fill(1.0f);
  c.run = [=](OpArgs& a) {
    float *x = a["x"].f32(), *y = a["y"].f32(), *acc = a["acc"].f32();
    for (int64_t i = 0; i < n; ++i) {
      if (i != skip) y[i] = 2 * x[i];
      acc[i] += x[i];
    }
    if (poke) x[0] = 5;
  };
  return c;
}

TEST(BackendHarness, PassesAndReturnsTheResults) {
  const Values got = check_case(Device::cpu, twice_case(7));
  ASSERT_TRUE(got.has("y") && got.has("acc") && !got.has("x"));
  EXPECT_EQ(got.dtype("y"), DType::f32);
  EXPECT_EQ(got["acc"].size(), 7u);
}

TEST(BackendHarness, ValuesAreRoundedToTheDtypeAndReproducible) {
  OpCase c = twice_case(64);
  std::vector<float> seen;
  c.run = [&](OpArgs& a) {
    seen.assign(a["x"].f32(), a["x"].f32() + 64);
    for (int64_t i = 0; i < 64; ++i) a["y"].f32()[i] = 0, a["acc"].f32()[i] += 0;
  };
  check_case(Device::cpu, c);
  EXPECT_EQ(seen, as_dtype(random_vector(64, 1), DType::bf16));  // the default: [-1, 1), seed = index + 1
}

TEST(BackendHarness, UnwrittenElementFails) {
  EXPECT_FAILS_WITH(check_case(Device::cpu, twice_case(9, 4)),
                    "output y (f32): 1 of 9 elements differ, the first at 4");
}

TEST(BackendHarness, ModifiedInputFails) {
  EXPECT_FAILS_WITH(check_case(Device::cpu, twice_case(9, -1, true)), "the op modified input x");
}

TEST(BackendHarness, BackendThatDiffersFromTheReferenceFails) {
  OpCase c = twice_case(5);
  int calls = 0;
  c.run = [&](OpArgs& a) {  // the second call (the backend's) adds 1 ulp-sized noise
    for (int64_t i = 0; i < 5; ++i) a["y"].f32()[i] = 1.0f + (calls ? 1e-7f : 0.0f), a["acc"].f32()[i] += 0;
    ++calls;
  };
  EXPECT_FAILS_WITH(check_case(Device::cpu, c), "output y (f32): 5 of 5 elements differ");
}

TEST(BackendHarness, ExceptionsAndMissingScalarsFail) {
  OpCase c("throws");
  c.run = [](OpArgs&) { fail("no such op"); };
  EXPECT_FAILS_WITH(check_case(Device::cpu, c), "threw: no such op");
  OpCase s("silent");
  s.scalar("loss", 0.0);
  s.run = [](OpArgs&) {};
  EXPECT_FAILS_WITH(check_case(Device::cpu, s), "did not report scalar loss");
}

TEST(BackendHarness, ToleranceComparison) {
  const std::vector<float> ref = {1, 2, 3, 4};
  Tol tol;
  tol.rel_l2 = 1e-2;
  EXPECT_TRUE(harness_detail::within({1, 2, 3, 4.01f}, ref, tol, "y"));
  EXPECT_FALSE(harness_detail::within({1, 2, 3, 4.5f}, ref, tol, "y"));
  EXPECT_FALSE(harness_detail::within({1, 2, NAN, 4}, ref, tol, "y"));  // an unwritten element
  EXPECT_FALSE(harness_detail::within({1, 2, 3, 4}, {1, 2, NAN, 4}, tol, "y"));
  tol.max_abs = 1e-3;
  EXPECT_FALSE(harness_detail::within({1, 2, 3, 4.01f}, ref, tol, "y"));
}

TEST(BackendHarness, DescribesTheCase) {
  OpCase c = twice_case(3);
  c.label = "small";
  EXPECT_EQ(c.describe(Device::cuda), "twice [small] on cuda: x[3]bf16+1 out y[3]f32 acc acc[3]f32");
  EXPECT_EQ(c.describe(Device::cpu), "twice [small] on cpu: x[3]f32+1 out y[3]f32 acc acc[3]f32");
}

}  // namespace
