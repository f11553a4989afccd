// How growth places source values in wider target tensors (growth_widen.h), and the dense form of
// BlockDense's and BlockShuffle's block factors (growth.h: block_factor_dense, block_factor_blocks).
#include "lingua/model/growth_widen.h"

#include "lingua/model/growth.h"

namespace lingua {

namespace {
// Block factor entry (b, i, j) of [k, m, n] in its dense form [k m, k n] (see growth.h).
template <class F>
void for_block_entries(const std::vector<int64_t>& d, bool interleaved, F f) {
  LINGUA_CHECK(d.size() == 3, "a block factor is 3-D, not ", shape_str(d));
  const int64_t k = d[0], m = d[1], n = d[2];
  for (int64_t b = 0; b < k; ++b)
    for (int64_t i = 0; i < m; ++i) {
      const int64_t row = interleaved ? i * k + b : b * m + i;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t col = interleaved ? j * k + b : b * n + j;
        f((size_t)((b * m + i) * n + j), (size_t)(row * k * n + col));
      }
    }
}
}  // namespace

std::vector<float> block_factor_dense(const std::vector<float>& v, const std::vector<int64_t>& shape,
                                      bool interleaved) {
  std::vector<float> out((size_t)(shape[0] * shape[1] * shape[0] * shape[2]), 0.0f);
  for_block_entries(shape, interleaved, [&](size_t at, size_t to) { out[to] = v[at]; });
  return out;
}

std::vector<float> block_factor_blocks(const std::vector<float>& dense, const std::vector<int64_t>& shape,
                                       bool interleaved) {
  std::vector<float> out((size_t)(shape[0] * shape[1] * shape[2]));
  for_block_entries(shape, interleaved, [&](size_t at, size_t from) { out[at] = dense[from]; });
  return out;
}

std::vector<float> widen_block_factor(const std::vector<float>& v, const std::vector<int64_t>& from,
                                      const std::vector<int64_t>& to, const FactorAxis& rows, const FactorAxis& cols) {
  const int64_t k = to[0], ms = from[1], ns = from[2], mt = to[1], nt = to[2];
  LINGUA_CHECK(from.size() == 3 && to.size() == 3 && from[0] == k, "growth: a block factor ", shape_str(from),
               " cannot widen to ", shape_str(to));
  // The source block and index of target (block b, index i) on axis `a` (false: a new unit), and
  // the entry's scale there.
  auto source = [k](const FactorAxis& a, int64_t b, int64_t i, int64_t size_t_, int64_t size_s, int64_t* sb,
                    int64_t* si, float* scale) {
    int64_t u = a.interleaved ? i * k + b : b * size_t_ + i;
    *scale = 1.0f;
    if (a.map) {
      const int64_t s = (*a.map)[(size_t)u];
      if (s < 0) return false;
      const int c = (*a.copies)[(size_t)s];
      if (c != 1) *scale = a.scale(c);
      u = s;
    }
    *sb = a.interleaved ? u % k : u / size_s;
    *si = a.interleaved ? u / k : u % size_s;
    return true;
  };
  std::vector<float> out((size_t)(k * mt * nt), 0.0f);
  for (int64_t b = 0; b < k; ++b)
    for (int64_t i = 0; i < mt; ++i) {
      int64_t rb, ri;
      float rs;
      if (!source(rows, b, i, mt, ms, &rb, &ri, &rs)) continue;
      for (int64_t j = 0; j < nt; ++j) {
        int64_t cb, cj;
        float cs;
        if (!source(cols, b, j, nt, ns, &cb, &cj, &cs) || cb != rb) continue;
        // (In fp32, the axes' scales in G_learn's order: units first, then the model dimension.)
        float x = v[(size_t)((rb * ms + ri) * ns + cj)];
        if (!rows.late) x *= rs;
        if (!cols.late) x *= cs;
        if (rows.late) x *= rs;
        if (cols.late) x *= cs;
        out[(size_t)((b * mt + i) * nt + j)] = x;
      }
    }
  return out;
}

std::vector<float> widen(const std::vector<float>& v, const ParamInfo& src, const ParamInfo& dst, int64_t unit,
                         const std::vector<int64_t>& map, const std::vector<int>& copies,
                         const std::function<float(int, bool)>& scale) {
  const int64_t R = dst.shape[0], C = dst.shape[1], SC = src.shape[1];
  const int axis = widening_axis(dst.axes[0]) ? 0 : 1;
  const bool input_side = axis == 1 && !dst.embedding;
  std::vector<float> out((size_t)(R * C), 0.0f);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = axis == 0 ? r : c, s = map[(size_t)(i / unit)];
      if (s < 0) continue;
      const int64_t si = s * unit + i % unit;
      const float x = axis == 0 ? v[(size_t)(si * SC + c)] : v[(size_t)(r * SC + si)];
      const int n = copies[(size_t)s];
      out[(size_t)(r * C + c)] = n == 1 ? x : x * scale(n, input_side);
    }
  return out;
}

std::vector<float> widen_units(const std::vector<float>& v, const ParamInfo& src, const ParamInfo& dst, int64_t unit,
                               const std::vector<int64_t>& map, const std::vector<int>& copies,
                               const std::function<float(int, bool)>& scale) {
  LINGUA_CHECK(dst.shape.size() == 2, "growth: ", dst.name, " ", shape_str(dst.shape), " cannot widen from ",
               shape_str(src.shape));
  std::vector<int64_t> m = map;
  std::vector<int> c = copies;
  if (dst.axes[0] == "2hidden" || dst.axes[1] == "2hidden") units_twice(m, c);
  return widen(v, src, dst, unit, m, c, scale);
}

void units_twice(std::vector<int64_t>& map, std::vector<int>& copies) {
  const int64_t ns = (int64_t)copies.size(), nt = (int64_t)map.size();
  for (int64_t j = 0; j < nt; ++j) map.push_back(map[(size_t)j] < 0 ? -1 : ns + map[(size_t)j]);
  const std::vector<int> once = copies;  // (not a range of the vector it is inserted into)
  copies.insert(copies.end(), once.begin(), once.end());
}

std::vector<float> place_dim(const std::vector<float>& v, const std::vector<int64_t>& from, const ParamInfo& to,
                             const std::vector<int64_t>& map, const std::vector<int>& copies,
                             const std::function<float(int, bool)>& factor, float new_norm) {
  const std::vector<int64_t>& shape = to.shape;
  if (shape.size() == 1) {
    std::vector<float> out((size_t)shape[0], new_norm);
    for (int64_t j = 0; j < shape[0]; ++j)
      if (const int64_t s = map[(size_t)j]; s >= 0) out[(size_t)j] = v[(size_t)s] * factor(copies[(size_t)s], true);
    return out;
  }
  const int64_t R = shape[0], C = shape[1], SC = from[1];
  const bool rows = to.axes[0] == "dim", cols = to.axes[1] == "dim";
  std::vector<float> out((size_t)(R * C), 0.0f);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t sr = rows ? map[(size_t)r] : r;
    if (sr < 0) continue;
    const float fr = rows ? factor(copies[(size_t)sr], false) : 1.0f;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t sc = cols ? map[(size_t)c] : c;
      if (sc < 0) continue;
      const float fc = cols ? factor(copies[(size_t)sc], false) : 1.0f;
      out[(size_t)(r * C + c)] = v[(size_t)(sr * SC + sc)] * fr * fc;
    }
  }
  return out;
}

}  // namespace lingua
