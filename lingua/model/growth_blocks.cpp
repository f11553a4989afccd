// The dense form of the block factors of BlockDense and BlockShuffle FFNs, in which growth widens
// their FFN units (growth.h: block_factor_dense, block_factor_blocks).
#include "lingua/model/growth.h"

namespace lingua {

namespace {
// Block factor entry (b, i, j) of [k, m, n] in its dense form [k m, k n] (see growth.h).
template <class F>
void for_block_entries(const std::vector<int64_t>& d, int unit_axis, F f) {
  LINGUA_CHECK(d.size() == 3 && (unit_axis == 1 || unit_axis == 2), "a block factor is 3-D with its units on axis 1 "
               "or 2, not ", shape_str(d), " (axis ", unit_axis, ")");
  const int64_t k = d[0], m = d[1], n = d[2];
  for (int64_t b = 0; b < k; ++b)
    for (int64_t i = 0; i < m; ++i) {
      const int64_t row = unit_axis == 1 ? i * k + b : b * m + i;
      for (int64_t j = 0; j < n; ++j) f((size_t)((b * m + i) * n + j), (size_t)(row * k * n + b * n + j));
    }
}
}  // namespace

std::vector<float> block_factor_dense(const std::vector<float>& v, const std::vector<int64_t>& shape, int unit_axis) {
  std::vector<float> out((size_t)(shape[0] * shape[1] * shape[0] * shape[2]), 0.0f);
  for_block_entries(shape, unit_axis, [&](size_t at, size_t to) { out[to] = v[at]; });
  return out;
}

std::vector<float> block_factor_blocks(const std::vector<float>& dense, const std::vector<int64_t>& shape,
                                       int unit_axis) {
  std::vector<float> out((size_t)(shape[0] * shape[1] * shape[2]));
  for_block_entries(shape, unit_axis, [&](size_t at, size_t from) { out[at] = dense[from]; });
  return out;
}

}  // namespace lingua
