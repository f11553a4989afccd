#pragma once
// Philox4x32-10 counter-based RNG. A value depends only on (seed, stream, counter), never on call
// order or device, so parameter init is identical on CPU and GPU and RNG state is three integers.
#include <array>
#include <cmath>
#include <cstdint>

namespace lingua {

#if defined(__CUDACC__)
#define LINGUA_HD __host__ __device__
#else
#define LINGUA_HD
#endif

LINGUA_HD inline void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// Uniform in (0, 1): never exactly 0 (safe for log) and never 1.
LINGUA_HD inline float u32_to_unit(uint32_t x) { return ((x >> 8) + 0.5f) * (1.0f / 16777216.0f); }

// Element `index` of a truncated normal N(0, std^2) cut at +-3 std, for (seed, stream).
// Rejection uses further counters of the same element, so the result is order-independent.
LINGUA_HD inline float philox_trunc_normal(uint64_t seed, uint32_t stream, uint64_t index, float std) {
  for (uint32_t attempt = 0;; ++attempt) {
    uint32_t c[4] = {(uint32_t)index, (uint32_t)(index >> 32), attempt, stream};
    philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    float u1 = u32_to_unit(c[0]), u2 = u32_to_unit(c[1]);
    float z = sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
    if (z >= -3.0f && z <= 3.0f) return z * std;
  }
}

// Element `index` of a normal N(0, std^2) (not truncated), for (seed, stream).
LINGUA_HD inline float philox_normal(uint64_t seed, uint32_t stream, uint64_t index, float std) {
  uint32_t c[4] = {(uint32_t)index, (uint32_t)(index >> 32), 0u, stream};
  philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
  float u1 = u32_to_unit(c[0]), u2 = u32_to_unit(c[1]);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2) * std;
}

// A sequential stream for the host (data loader, sampling). Its whole state is
// (seed, stream, counter); serialise those three to resume exactly.
struct PhiloxStream {
  uint64_t seed = 0;
  uint32_t stream = 0;
  uint64_t counter = 0;  // number of 32-bit values drawn so far

  PhiloxStream() = default;
  PhiloxStream(uint64_t s, uint32_t st) : seed(s), stream(st) {}

  uint32_t next_u32() {
    uint64_t block = counter >> 2;
    uint32_t c[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0x5EED5EEDu, stream};
    philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    return c[counter++ & 3];
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() {
    uint64_t a = next_u32() >> 5, b = next_u32() >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
  }
  // Uniform integer in [0, n), n > 0, without modulo bias.
  uint64_t below(uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
      uint64_t x = ((uint64_t)next_u32() << 32) | next_u32();
      if (x < limit) return x % n;
    }
  }
};

}  // namespace lingua
