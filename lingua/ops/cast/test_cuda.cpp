// GPU casts against the CPU's through the op-test harness: bitwise (round to nearest even).
#include <gtest/gtest.h>

#include <random>

#include "lingua/ops/backend_test.h"
#include "lingua/ops/cast/cast.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

// Normal values of standard deviation 100: many exponents and rounding cases.
std::vector<float> wide_values(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  for (auto& v : x) v = nd(g) * 100;
  return x;
}

// Both directions; the CPU side casts for real (bf16 tensors on the CPU too).
std::vector<OpCase> cases() {
  std::vector<OpCase> cs;
  for (int64_t n : {1, 7, 8, 9, 1000, 4099})
    for (DType from : {DType::f32, DType::bf16}) {
      const DType to = from == DType::f32 ? DType::bf16 : DType::f32;
      OpCase& c = cs.emplace_back("cast_into");
      c.in("src", {n}, from).cpu_dtype(from).values(wide_values(n, 2));
      c.out("dst", {n}, to).cpu_dtype(to).exact();
      c.run = [](OpArgs& a) { cast_into(a["dst"], a["src"]); };
    }
  return cs;
}

LINGUA_OP_TEST(Cast, MatchesHostRoundingAtOddSizes, cases())

}  // namespace
