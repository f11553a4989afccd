#include "lingua/train/probe.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/core/error.h"
#include "lingua/model/linear.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

// A tensor's values as host floats (waits for the GPU).
std::vector<float> host_floats(const Tensor& t) {
  const int64_t n = t.numel();
  if (t.dtype == DType::f32) {
    std::vector<float> v((size_t)n);
    copy_tensor(Tensor(v.data(), {n}), t);
    return v;
  }
  LINGUA_CHECK(t.dtype == DType::bf16, "probe: cannot read a tensor of dtype ", dtype_name(t.dtype));
  std::vector<uint16_t> h((size_t)n);
  copy_tensor(Tensor(h.data(), {n}, DType::bf16, Device::cpu), t);
  return from_bf16(h);
}

constexpr int kEntropyQueries = 64;

}  // namespace

void MomentSums::add(const float* v, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const double x = v[i], x2 = x * x;
    s1 += x, s2 += x2, s3 += x2 * x, s4 += x2 * x2, abs += std::fabs(x);
  }
  n += count;
}

nlohmann::json MomentSums::stats() const {
  if (n == 0) return {{"n", 0}};
  const double m = s1 / n, e2 = s2 / n, e3 = s3 / n, e4 = s4 / n;
  // Central moments from the raw ones.
  const double var = std::max(0.0, e2 - m * m);
  const double c3 = e3 - 3 * m * e2 + 2 * m * m * m;
  const double c4 = e4 - 4 * m * e3 + 6 * m * m * e2 - 3 * m * m * m * m;
  const double sd = std::sqrt(var);
  const bool flat = sd <= 1e-12 * std::max(1.0, std::fabs(m));
  return {{"mean", m},
          {"std", sd},
          {"skew", flat ? 0.0 : c3 / (var * sd)},
          {"kurtosis", flat ? 0.0 : c4 / (var * var)},
          {"abs_mean", abs / n},
          {"n", n}};
}

Probe::Probe(std::string path, int max_sequences) : path_(std::move(path)), max_sequences_(max_sequences) {
  LINGUA_CHECK(max_sequences_ > 0, "probe: max_sequences must be positive");
  const fs::path dir = fs::path(path_).parent_path();
  if (!dir.empty()) fs::create_directories(dir);
}

Tensor Probe::scratch_like(const Tensor& t) {
  const size_t bytes = (size_t)t.numel() * dtype_size(t.dtype);
  Tensor s = t;
  if (t.device == Device::cpu) {
    host_scratch_.emplace_back((bytes + 3) / 4);
    s.data = host_scratch_.back().data();
  } else {
    device_scratch_.push_back(std::make_unique<DeviceBuffer>(bytes));
    s.data = device_scratch_.back()->data();
  }
  return s;
}

void Probe::split_columns(const Linear& l, const Tensor& t, std::vector<MomentSums>& into) {
  const std::vector<float> v = host_floats(t);
  const std::vector<int>& ids = l.params();
  into.resize(ids.size());
  const int64_t cols = l.out(), rows = t.numel() / cols;
  int64_t first = 0;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int64_t width = ids.size() == 1 ? cols : l.store().info(ids[k]).local_shape[0];
    for (int64_t r = 0; r < rows; ++r) into[k].add(v.data() + r * cols + first, width);
    first += width;
  }
}

Probe::LinearRecord& Probe::record_of(const Linear& l) {
  const std::string name = l.name();
  LinearRecord& rec = linears_[name];
  if (!rec.linear) order_.push_back(name);
  rec.linear = &l;
  return rec;
}

void Probe::linear_forward(const Linear& l, const Tensor& x, const Tensor& y) {
  LinearRecord& rec = record_of(l);
  rec.input.resize(1);
  const std::vector<float> xv = host_floats(x);
  rec.input[0].add(xv.data(), (int64_t)xv.size());
  split_columns(l, y, rec.output);
}

void Probe::linear_backward(const Linear& l, const Tensor& dy) {
  split_columns(l, dy, record_of(l).output_grad);
}

void Probe::attention_scores(const std::string& name, const Tensor& q, const Tensor& k, int prefix) {
  (void)prefix;  // (prefix rows sit first: the causal order covers them)
  const int64_t B = q.shape[0], S = q.shape[1], H = q.shape[2], hd = q.shape[3], KV = k.shape[2];
  const std::vector<float> qv = host_floats(q), kv = host_floats(k);
  const int nq = (int)std::min<int64_t>(S, kEntropyQueries);
  std::vector<double> per_head((size_t)H, 0.0);
  std::vector<double> s((size_t)S);
  const double scale = 1.0 / std::sqrt((double)hd);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      for (int i = 0; i < nq; ++i) {
        const int64_t t = (int64_t)(i + 1) * S / nq - 1;  // evenly spaced, the last row included
        const float* qt = qv.data() + ((b * S + t) * H + h) * hd;
        double mx = -INFINITY;
        for (int64_t u = 0; u <= t; ++u) {
          const float* ku = kv.data() + ((b * S + u) * KV + g) * hd;
          double d = 0;
          for (int64_t j = 0; j < hd; ++j) d += (double)qt[j] * ku[j];
          s[(size_t)u] = d * scale;
          mx = std::max(mx, s[(size_t)u]);
        }
        double z = 0, ps = 0;
        for (int64_t u = 0; u <= t; ++u) {
          const double e = std::exp(s[(size_t)u] - mx);
          z += e, ps += e * (s[(size_t)u] - mx);
        }
        per_head[(size_t)h] += std::log(z) - ps / z;  // -sum p log p, p = e / z
      }
    }
  double mean = 0;
  for (double& e : per_head) mean += (e /= (double)(B * nq));
  entropy_[name] = {{"mean", mean / (double)H}, {"per_head", per_head}, {"queries", nq * B}};
}

nlohmann::json Probe::run(Executor& exec, const int32_t* tokens, const int32_t* targets, int B, int T, int64_t step) {
  linears_.clear();
  order_.clear();
  entropy_.clear();
  const int b = std::min(B, max_sequences_);
  int64_t counted = 0;
  for (int64_t i = 0; i < (int64_t)b * T; ++i) counted += targets[i] >= 0;
  const bool own_grads = !exec.grads_in_activations();
  if (own_grads) exec.zero_grads();  // the probe batch's gradients alone
  {
    ScopedProbeObserver scope(this);
    exec.forward_backward(tokens, targets, b, T, 1.0f / (float)std::max<int64_t>(1, counted));
  }
  nlohmann::json linear = nlohmann::json::object();
  const ParamStore& store = exec.model().params();
  for (const std::string& name : order_) {
    const LinearRecord& rec = linears_[name];
    const std::vector<int>& ids = rec.linear->params();
    for (size_t k = 0; k < ids.size(); ++k) {
      const std::string key = weight_base_name(store.info(ids[k]).name);
      nlohmann::json j;
      if (!rec.input.empty()) j["input"] = rec.input[0].stats();
      if (k < rec.output.size()) j["output"] = rec.output[k].stats();
      if (k < rec.output_grad.size()) j["output_grad"] = rec.output_grad[k].stats();
      MomentSums w, g;
      const std::vector<float> wv = host_floats(store.local_param(ids[k]));
      w.add(wv.data(), (int64_t)wv.size());
      j["weight"] = w.stats();
      const Tensor grad = store.local_grad(ids[k]);
      if (grad.data) {
        const std::vector<float> gv = host_floats(grad);
        g.add(gv.data(), (int64_t)gv.size());
        j["weight_grad"] = g.stats();
      }
      linear[key] = j;
    }
  }
  if (own_grads) exec.zero_grads();
  host_scratch_.clear();
  device_scratch_.clear();
  nlohmann::json line = {{"global_step", step}, {"sequences", b}, {"tokens", (int64_t)b * T},
                         {"linear", linear}, {"attention_entropy", entropy_}};
  std::ofstream f(path_, std::ios::app);
  f << line.dump() << "\n";
  LINGUA_CHECK(f.good(), "probe: cannot append to ", path_);
  return line;
}

}  // namespace lingua
