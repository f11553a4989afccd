// GPU fused output projection + cross-entropy against the CPU reference run on the same
// bf16-rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/cross_entropy/cross_entropy.h"
#include "lingua/ops/testing.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU"

struct Case {
  int64_t N, D, V;
};
std::ostream& operator<<(std::ostream& os, Case c) { return os << "N" << c.N << " D" << c.D << " V" << c.V; }

// Odd sizes, V = 258 (not a multiple of 8: the scalar row path) and V = 32000 (the vector path).
const Case kCases[] = {{1, 31, 258}, {31, 64, 258}, {33, 17, 50}, {257, 33, 258}, {257, 64, 32000}, {31, 129, 32000}};

std::vector<float> rounded(std::vector<float> v) {
  for (float& f : v) f = round_to_bf16(f);
  return v;
}

DeviceBuffer upload_bf16(const std::vector<float>& v) {
  DeviceBuffer b(v.size() * 2);
  auto h = to_bf16(v);
  if (!h.empty()) copy_to_device(b.data(), h.data(), b.bytes());
  return b;
}
template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  if (!v.empty()) copy_to_device(b.data(), v.data(), b.bytes());
  return b;
}
std::vector<float> download_f32(const DeviceBuffer& b) {
  std::vector<float> h(b.bytes() / 4);
  if (!h.empty()) copy_to_host(h.data(), b.data(), b.bytes());
  return h;
}
std::vector<float> download_bf16(const DeviceBuffer& b) {
  std::vector<uint16_t> h(b.bytes() / 2);
  if (!h.empty()) copy_to_host(h.data(), b.data(), b.bytes());
  return from_bf16(h);
}
std::vector<uint8_t> bytes_of(const DeviceBuffer& b) {
  std::vector<uint8_t> h(b.bytes());
  if (!h.empty()) copy_to_host(h.data(), b.data(), h.size());
  return h;
}
void poison(const DeviceBuffer& b) {  // NaN in f32 and bf16
  std::vector<uint8_t> ff(b.bytes(), 0xFF);
  if (!ff.empty()) copy_to_device(b.data(), ff.data(), ff.size());
}
double rel_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size() && i < out.size(); ++i) {
    const double d = (double)out[i] - ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// x in [-1, 1), w in [-w_scale, w_scale), both bf16-rounded; every 5th row from row 3 ignored
// (-1, or -100 as PyTorch's default ignore_index).
struct Inputs {
  std::vector<float> x, w;
  std::vector<int32_t> targets;
};
Inputs random_inputs(Case c, uint32_t seed, float w_scale = 0.3f) {
  Inputs in{rounded(random_vector(c.N * c.D, seed)), rounded(random_vector(c.V * c.D, seed + 1, -w_scale, w_scale)),
            random_ints(c.N, seed + 2, 0, (int32_t)c.V - 1)};
  for (int64_t n = 3; n < c.N; n += 5) in.targets[n] = n % 2 ? -1 : -100;
  return in;
}

struct Result {
  double total = 0;
  std::vector<float> nll, dx, dw;
};

Result cpu_reference(const Inputs& in, Case c, float grad_scale) {
  Result r{0, std::vector<float>(c.N), std::vector<float>(c.N * c.D), std::vector<float>(c.V * c.D, 0.0f)};
  r.total = output_cross_entropy(Tensor(in.x.data(), {c.N, c.D}), Tensor(in.w.data(), {c.V, c.D}),
                                 Tensor(in.targets.data(), {c.N}), Tensor(r.nll.data(), {c.N}), grad_scale,
                                 Tensor(r.dx.data(), {c.N, c.D}), Tensor(r.dw.data(), {c.V, c.D}));
  return r;
}

// The inputs on the GPU.
struct GpuInputs {
  Case c;
  DeviceBuffer x, w, targets;
  GpuInputs(const Inputs& in, Case c_)
      : c(c_), x(upload_bf16(in.x)), w(upload_bf16(in.w)), targets(upload(in.targets)) {}
  Tensor X() const { return Tensor(x.data(), {c.N, c.D}, DType::bf16, Device::cuda); }
  Tensor W() const { return Tensor(w.data(), {c.V, c.D}, DType::bf16, Device::cuda); }
  Tensor T() const { return Tensor(targets.data(), {c.N}, DType::i32, Device::cuda); }
};

// Outputs on the GPU: nll and dx poisoned (written), dw zero (accumulated).
struct Outputs {
  DeviceBuffer nll, dx, dw;
  explicit Outputs(Case c) : nll(c.N * 4), dx(c.N * c.D * 2), dw(c.V * c.D * 4) {
    poison(nll);
    poison(dx);
    dw.zero();
  }
};

struct Call {
  bool want_nll = true, want_dx = true, want_dw = true;
  int64_t chunk = 0;
};

double run(const GpuInputs& d, Outputs& o, float grad_scale, Call call = {}) {
  const Case c = d.c;
  const Tensor nll = call.want_nll ? Tensor(o.nll.data(), {c.N}, DType::f32, Device::cuda) : Tensor();
  const Tensor dx = call.want_dx ? Tensor(o.dx.data(), {c.N, c.D}, DType::bf16, Device::cuda) : Tensor();
  const Tensor dw = call.want_dw ? Tensor(o.dw.data(), {c.V, c.D}, DType::f32, Device::cuda) : Tensor();
#ifdef LINGUA_CUDA
  if (call.chunk > 0) return output_cross_entropy_cuda(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw, call.chunk);
#endif
  return output_cross_entropy(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw);
}

void expect_matches_cpu(Case c, float grad_scale, int64_t chunk, uint32_t seed) {
  const Inputs in = random_inputs(c, seed);
  const Result ref = cpu_reference(in, c, grad_scale);
  GpuInputs d(in, c);
  Outputs o(c);
  Call call;
  call.chunk = chunk;
  const double total = run(d, o, grad_scale, call);
  const auto nll = download_f32(o.nll), dx = download_bf16(o.dx), dw = download_f32(o.dw);
  EXPECT_LT(rel_l2(nll, ref.nll), 1e-2) << c << " chunk " << chunk;
  EXPECT_LT(std::fabs(total - ref.total), 1e-2 * std::fabs(ref.total)) << c << " chunk " << chunk;
  EXPECT_LT(rel_l2(dx, ref.dx), 1e-2) << c << " chunk " << chunk;
  EXPECT_LT(rel_l2(dw, ref.dw), 1e-2) << c << " chunk " << chunk;
  // the total is the sum of the per-row nll; ignored rows are exactly 0, with no gradient
  double sum = 0;
  for (int64_t n = 0; n < c.N; ++n) {
    sum += nll[n];
    if (in.targets[n] < 0) {
      EXPECT_EQ(nll[n], 0.0f) << c << " row " << n;
      for (int64_t i = 0; i < c.D; ++i) ASSERT_EQ(dx[n * c.D + i], 0.0f) << c << " row " << n;
    }
  }
  EXPECT_NEAR(total, sum, 1e-9 * std::fabs(sum)) << c;
}

TEST(CrossEntropyCuda, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1;
  for (Case c : kCases) expect_matches_cpu(c, 0.7f, 0, seed += 10);
}

// Several chunks (and x chunks at offsets that are not 16-byte aligned when D is odd).
TEST(CrossEntropyCuda, MultiChunkMatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (Case c : kCases)
    for (int64_t chunk : {1, 7, 64})
      if (chunk < c.N) expect_matches_cpu(c, 1.3f, chunk, seed += 10);
}

TEST(CrossEntropyCuda, LargeLogitsStayFinite) {
  SKIP_WITHOUT_GPU();
  const Case c{65, 64, 258};
  const Inputs in = random_inputs(c, 7, 15.0f);  // logits of standard deviation ~40
  const Result ref = cpu_reference(in, c, 1.0f);
  GpuInputs d(in, c);
  Outputs o(c);
  const double total = run(d, o, 1.0f);
  EXPECT_TRUE(std::isfinite(total));
  EXPECT_LT(rel_l2(download_f32(o.nll), ref.nll), 1e-2);
  for (float v : download_bf16(o.dx)) ASSERT_TRUE(std::isfinite(v));
  for (float v : download_f32(o.dw)) ASSERT_TRUE(std::isfinite(v));
}

TEST(CrossEntropyCuda, ForwardOnlyGivesTheSameLoss) {
  SKIP_WITHOUT_GPU();
  for (Case c : {Case{257, 33, 258}, Case{257, 64, 32000}}) {
    const Inputs in = random_inputs(c, 8);
    GpuInputs d(in, c);
    Outputs with_grads(c), eval(c), no_nll(c);
    const double t1 = run(d, with_grads, 1.0f);
    const double t2 = run(d, eval, 1.0f, Call{true, false, false, 0});
    const double t3 = run(d, no_nll, 1.0f, Call{false, false, false, 0});
    EXPECT_EQ(t1, t2) << c;
    EXPECT_EQ(t1, t3) << c;
    EXPECT_EQ(bytes_of(with_grads.nll), bytes_of(eval.nll)) << c;
    // with dx or dw alone, the other gradient is the same as when both are computed
    Outputs dx_only(c), dw_only(c);
    run(d, dx_only, 1.0f, Call{true, true, false, 0});
    run(d, dw_only, 1.0f, Call{true, false, true, 0});
    EXPECT_EQ(bytes_of(dx_only.dx), bytes_of(with_grads.dx)) << c;
    EXPECT_EQ(bytes_of(dw_only.dw), bytes_of(with_grads.dw)) << c;
  }
}

TEST(CrossEntropyCuda, GradScaleScalesGradients) {
  SKIP_WITHOUT_GPU();
  const Case c{33, 17, 50};
  const Inputs in = random_inputs(c, 9);
  GpuInputs d(in, c);
  Outputs one(c), scaled(c);
  run(d, one, 1.0f);
  run(d, scaled, 0.25f);
  EXPECT_EQ(bytes_of(one.nll), bytes_of(scaled.nll));
  auto dx = download_bf16(one.dx), dw = download_f32(one.dw);
  for (float& v : dx) v *= 0.25f;
  for (float& v : dw) v *= 0.25f;
  EXPECT_TRUE(close(download_bf16(scaled.dx), dx, 1e-6, "dx"));
  EXPECT_TRUE(close(download_f32(scaled.dw), dw, 1e-6, "dw"));
}

TEST(CrossEntropyCuda, DwAccumulatesDxIsWritten) {
  SKIP_WITHOUT_GPU();
  for (Case c : {Case{33, 17, 50}, Case{257, 64, 32000}}) {
    const Inputs in = random_inputs(c, 10);
    GpuInputs d(in, c);
    Outputs once(c), twice(c);
    run(d, once, 1.0f);
    run(d, twice, 1.0f);
    run(d, twice, 1.0f);
    auto expected = download_f32(once.dw);
    for (float& v : expected) v *= 2;
    EXPECT_TRUE(close(download_f32(twice.dw), expected, 1e-6, "dw twice")) << c;
    EXPECT_EQ(bytes_of(twice.dx), bytes_of(once.dx)) << c;
  }
}

TEST(CrossEntropyCuda, Deterministic) {
  SKIP_WITHOUT_GPU();
  for (Case c : {Case{257, 64, 32000}, Case{1000, 96, 258}})
    for (int64_t chunk : {0, 100}) {
      const Inputs in = random_inputs(c, 11);
      GpuInputs d(in, c);
      Outputs a(c), b(c);
      Call call;
      call.chunk = chunk;
      const double ta = run(d, a, 0.5f, call), tb = run(d, b, 0.5f, call);
      EXPECT_EQ(ta, tb) << c;
      EXPECT_EQ(bytes_of(a.nll), bytes_of(b.nll)) << c;
      EXPECT_EQ(bytes_of(a.dx), bytes_of(b.dx)) << c;
      EXPECT_EQ(bytes_of(a.dw), bytes_of(b.dw)) << c;
    }
}

TEST(CrossEntropyCuda, TargetOutsideVocabularyIsReported) {
  SKIP_WITHOUT_GPU();
  const Case c{4, 3, 5};
  Inputs in = random_inputs(c, 12);
  for (auto [bad, row, value] : {std::tuple{std::vector<int32_t>{0, 4, 1, 5}, "row 3", "target 5"},
                                  std::tuple{std::vector<int32_t>{0, 7, 1, 5}, "row 1", "target 7"}}) {
    in.targets = bad;
    GpuInputs d(in, c);
    Outputs o(c);
    try {
      run(d, o, 1.0f);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(row), std::string::npos) << msg;
      EXPECT_NE(msg.find(value), std::string::npos) << msg;
    }
  }
  // the error does not stick: a valid call afterwards works
  in.targets = {0, 4, 1, -1};
  GpuInputs d(in, c);
  Outputs o(c);
  EXPECT_TRUE(std::isfinite(run(d, o, 1.0f)));
}

// ---- output_cross_entropy_sum: the loss kept on the device ----

// The sum form into *loss (device memory), as run() calls the returning form.
void run_sum(const GpuInputs& d, Outputs& o, float grad_scale, double* loss, bool accumulate, int64_t chunk = 0) {
  const Case c = d.c;
  const Tensor nll(o.nll.data(), {c.N}, DType::f32, Device::cuda);
  const Tensor dx(o.dx.data(), {c.N, c.D}, DType::bf16, Device::cuda);
  const Tensor dw(o.dw.data(), {c.V, c.D}, DType::f32, Device::cuda);
#ifdef LINGUA_CUDA
  if (chunk > 0)
    return output_cross_entropy_sum_cuda(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw, loss, accumulate, chunk);
#endif
  output_cross_entropy_sum(d.X(), d.W(), d.T(), nll, grad_scale, dx, dw, loss, accumulate);
}

double read_double(const double* device) {
  double v;
  copy_to_host(&v, device, sizeof v);
  return v;
}

::testing::AssertionResult same_double(double a, double b) {
  if (std::memcmp(&a, &b, sizeof a) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << std::hexfloat << a << " vs " << b;
}

TEST(CrossEntropyCuda, DeviceSumIsTheReturnedLossBitwise) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer loss(sizeof(double));
  for (Case c : {Case{33, 17, 50}, Case{257, 64, 32000}})
    for (int64_t chunk : {0, 7}) {
      const Inputs in = random_inputs(c, 20), in2 = random_inputs(c, 21);
      GpuInputs d(in, c), d2(in2, c);
      Outputs ref(c), ref2(c), o(c);
      Call call;
      call.chunk = chunk;
      const double t = run(d, ref, 0.5f, call), t2 = run(d2, ref2, 0.5f, call);
      poison(loss);
      run_sum(d, o, 0.5f, loss.as<double>(), false, chunk);
      EXPECT_TRUE(same_double(read_double(loss.as<double>()), t)) << c << " chunk " << chunk;
      EXPECT_EQ(bytes_of(o.nll), bytes_of(ref.nll)) << c;
      EXPECT_EQ(bytes_of(o.dx), bytes_of(ref.dx)) << c;
      EXPECT_EQ(bytes_of(o.dw), bytes_of(ref.dw)) << c;
      // accumulated over a second call: the host sum of the two returned losses
      run_sum(d2, o, 0.5f, loss.as<double>(), true, chunk);
      EXPECT_TRUE(same_double(read_double(loss.as<double>()), t + t2)) << c << " chunk " << chunk;
      EXPECT_EQ(bytes_of(o.nll), bytes_of(ref2.nll)) << c;
    }
}

TEST(CrossEntropyCuda, DeviceSumEdgeCases) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer loss(sizeof(double));
  // No rows: written 0, or left as is when accumulating.
  const Case c0{0, 3, 5};
  const Inputs in0 = random_inputs(Case{1, 3, 5}, 22);
  GpuInputs d0(in0, Case{1, 3, 5});
  const Tensor X0(nullptr, {0, c0.D}, DType::bf16, Device::cuda), T0(nullptr, {0}, DType::i32, Device::cuda);
  const double seven = 7.0;
  copy_to_device(loss.data(), &seven, sizeof seven);
  output_cross_entropy_sum(X0, d0.W(), T0, Tensor(), 1.0f, Tensor(), Tensor(), loss.as<double>(), true);
  EXPECT_EQ(read_double(loss.as<double>()), 7.0);
  output_cross_entropy_sum(X0, d0.W(), T0, Tensor(), 1.0f, Tensor(), Tensor(), loss.as<double>(), false);
  EXPECT_EQ(read_double(loss.as<double>()), 0.0);

  // A target >= V is not reported: the row counts as ignored (the caller validates targets).
  const Case c{9, 3, 5};
  Inputs in = random_inputs(c, 23);
  Inputs ignored = in;
  in.targets[2] = 5;
  in.targets[6] = 1000;
  ignored.targets[2] = ignored.targets[6] = -1;
  GpuInputs bad(in, c), good(ignored, c);
  Outputs ob(c), og(c);
  const double t = run(good, og, 1.0f);
  EXPECT_NO_THROW(run_sum(bad, ob, 1.0f, loss.as<double>(), false));
  EXPECT_TRUE(same_double(read_double(loss.as<double>()), t));
  EXPECT_EQ(bytes_of(ob.nll), bytes_of(og.nll));
  EXPECT_EQ(bytes_of(ob.dx), bytes_of(og.dx));
  EXPECT_EQ(bytes_of(ob.dw), bytes_of(og.dw));
  EXPECT_THROW(run_sum(good, og, 1.0f, nullptr, false), Error);
}

// Captured in a CUDA graph after one eager call (which sizes the op scratch) and replayed: the
// same loss, nll, dx and dw bits as the eager call, also after the inputs change.
TEST(CrossEntropyCuda, CapturedCallReplaysBitwise) {
  SKIP_WITHOUT_GPU();
  for (auto [c, chunk] : {std::pair{Case{257, 64, 32000}, int64_t(0)}, std::pair{Case{100, 33, 258}, int64_t(30)}}) {
    const Inputs in = random_inputs(c, 30), in2 = random_inputs(c, 31);
    GpuInputs d(in, c);
    DeviceBuffer loss(sizeof(double));
    Outputs eager(c), eager2(c), o(c);
    // eager references (on a separate copy of the second input)
    run_sum(d, eager, 0.5f, loss.as<double>(), false, chunk);
    const double t = read_double(loss.as<double>());
    {
      GpuInputs d2(in2, c);
      run_sum(d2, eager2, 0.5f, loss.as<double>(), false, chunk);
    }
    const double t2 = read_double(loss.as<double>());

    CudaGraph g;
    g.begin_capture();
    run_sum(d, o, 0.5f, loss.as<double>(), false, chunk);
    g.end_capture();
    ASSERT_TRUE(g.ready()) << c;

    poison(loss);
    poison(o.nll);
    poison(o.dx);
    o.dw.zero();
    g.launch();
    EXPECT_TRUE(same_double(read_double(loss.as<double>()), t)) << c;
    EXPECT_EQ(bytes_of(o.nll), bytes_of(eager.nll)) << c;
    EXPECT_EQ(bytes_of(o.dx), bytes_of(eager.dx)) << c;
    EXPECT_EQ(bytes_of(o.dw), bytes_of(eager.dw)) << c;

    // new inputs in the same buffers, replayed
    const auto x2 = to_bf16(in2.x);
    copy_to_device(d.x.data(), x2.data(), x2.size() * 2);
    copy_to_device(d.targets.data(), in2.targets.data(), in2.targets.size() * 4);
    const auto w2 = to_bf16(in2.w);
    copy_to_device(d.w.data(), w2.data(), w2.size() * 2);
    poison(loss);
    poison(o.nll);
    poison(o.dx);
    o.dw.zero();
    g.launch();
    EXPECT_TRUE(same_double(read_double(loss.as<double>()), t2)) << c;
    EXPECT_EQ(bytes_of(o.nll), bytes_of(eager2.nll)) << c;
    EXPECT_EQ(bytes_of(o.dx), bytes_of(eager2.dx)) << c;
    EXPECT_EQ(bytes_of(o.dw), bytes_of(eager2.dw)) << c;
  }
}

TEST(CrossEntropyCuda, ArgumentErrors) {
  SKIP_WITHOUT_GPU();
  const Case c{4, 3, 5};
  const Inputs in = random_inputs(c, 13);
  GpuInputs d(in, c);
  DeviceBuffer f32_buf(c.V * c.D * 4), i32_buf(c.N * 4);
  std::vector<int32_t> host_targets = in.targets;
  const auto cuda = Device::cuda;
  const Tensor X = d.X(), W = d.W(), T = d.T();
  // dtypes
  EXPECT_THROW(output_cross_entropy(Tensor(f32_buf.data(), {c.N, c.D}, DType::f32, cuda), W, T, Tensor(), 1.0f,
                                    Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, Tensor(f32_buf.data(), {c.V, c.D}, DType::f32, cuda), T, Tensor(), 1.0f,
                                    Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, Tensor(f32_buf.data(), {c.N}, DType::f32, cuda), Tensor(), 1.0f, Tensor(),
                                    Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, Tensor(f32_buf.data(), {c.N, c.D}, DType::f32, cuda),
                                    Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, Tensor(),
                                    Tensor(f32_buf.data(), {c.V, c.D}, DType::bf16, cuda)),
               Error);
  // devices
  EXPECT_THROW(output_cross_entropy(X, W, Tensor(host_targets.data(), {c.N}), Tensor(), 1.0f, Tensor(), Tensor()),
               Error);
  // shapes
  EXPECT_THROW(output_cross_entropy(X, Tensor(d.w.data(), {c.D, c.V}, DType::bf16, cuda), T, Tensor(), 1.0f, Tensor(),
                                    Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, Tensor(i32_buf.data(), {c.N - 1}, DType::i32, cuda), Tensor(), 1.0f,
                                    Tensor(), Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(f32_buf.data(), {c.N + 1}, DType::f32, cuda), 1.0f, Tensor(),
                                    Tensor()),
               Error);
  EXPECT_THROW(output_cross_entropy(X, W, T, Tensor(), 1.0f, Tensor(), Tensor(f32_buf.data(), {c.V, c.D + 1},
                                                                            DType::f32, cuda)),
               Error);
  // no rows: nothing to do
  EXPECT_EQ(output_cross_entropy(Tensor(nullptr, {0, c.D}, DType::bf16, cuda), W,
                                 Tensor(nullptr, {0}, DType::i32, cuda), Tensor(), 1.0f, Tensor(), Tensor()),
            0.0);
}

}  // namespace
