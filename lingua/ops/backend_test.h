#pragma once
// The op-test harness: a test declares each case of an op once (its tensors, their values, the
// outputs' tolerances and the call) and check_cases() runs the cases on a backend against the
// CPU reference, run on f32 tensors holding the same values (rounded to each tensor's dtype):
//   Device::cuda: the tensors in their declared dtypes on the GPU; outputs within tolerance.
//   Device::cpu:  the same call on CPU tensors (f32 unless declared otherwise), bitwise equal to
//                 the reference: the harness's own logic runs on machines without a GPU.
// Before the call, outputs are poisoned (all-ones bytes: NaN; the reference's: another NaN) unless
// accumulated, so an element the op leaves unwritten fails; after it, inputs must be unchanged.
// A failure names the op, the case, the backend, the tensors (shape, dtype, offset) and the output.
// Tensors and values live in the harness for one check_case() call; run() gets views.
//
//   OpCase c("rmsnorm_forward", "eps 1e-5");
//   c.in("x", {N, D}, DType::bf16).uniform(-2, 2, /*seed*/ 1).offset(1);  // misaligned by 1
//   c.in("w", {D}).uniform(0.5f, 1.5f, 2);
//   c.out("y", {N, D}, DType::bf16);  // tolerance by dtype: bf16 1e-2, f32 1e-5, i32 exact
//   c.out("rstd", {N}).tol(1e-5);
//   c.run = [](OpArgs& a) { rmsnorm_forward(a["x"], a["w"], 1e-5f, a["y"], a["rstd"]); };
//   LINGUA_OP_TEST(RMSNorm, ForwardMatchesCpu, std::vector<OpCase>{c})
// declares RMSNormCuda.ForwardMatchesCpu (skipped without a GPU) and
// RMSNormCpuBackend.ForwardMatchesCpu.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/core/tensor.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

namespace lingua::test_util {

// How an f32 / bf16 output is compared on the GPU (i32 outputs, and every output on the CPU
// backend, are compared bitwise).
struct Tol {
  double rel_l2 = 0;    // ||got - ref|| / ||ref|| < rel_l2
  double max_abs = -1;  // and, when >= 0, max |got - ref| <= max_abs
  bool exact = false;   // instead: bitwise equal to the reference rounded to the output's dtype
};
inline Tol exact_tol() {
  Tol t;
  t.exact = true;
  return t;
}
// CUDA.md's convention: 1e-2 for bf16 outputs, 1e-5 for f32.
inline double dtype_tol(DType dt) { return dt == DType::bf16 ? 1e-2 : 1e-5; }

// Host values of one tensor: f for f32 / bf16 (representable in dtype), i for i32.
struct HostTensor {
  DType dtype = DType::f32;
  std::vector<float> f;
  std::vector<int32_t> i;
};

// Tensors' host values and reported scalars, by name.
struct Values {
  std::map<std::string, HostTensor> tensors;
  std::map<std::string, double> scalars;
  bool has(const std::string& name) const { return tensors.count(name) > 0; }
  const HostTensor& at(const std::string& name) const {
    auto it = tensors.find(name);
    LINGUA_CHECK(it != tensors.end(), "op test: no tensor '", name, "'");
    return it->second;
  }
  const std::vector<float>& operator[](const std::string& name) const { return at(name).f; }
  const std::vector<int32_t>& ints(const std::string& name) const { return at(name).i; }
  DType dtype(const std::string& name) const { return at(name).dtype; }
  double scalar(const std::string& name) const {
    auto it = scalars.find(name);
    LINGUA_CHECK(it != scalars.end(), "op test: no scalar '", name, "'");
    return it->second;
  }
};

// A custom GPU comparison of one output (got and ref as floats; in: the case's input values).
using Compare = std::function<::testing::AssertionResult(const std::vector<float>& got,
                                                         const std::vector<float>& ref, const Values& in)>;

enum class Role { in, out, acc };  // read; written (poisoned first); updated in place

// One tensor of a case. Setters return *this, for chaining.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::f32;  // on the GPU; the values are rounded to it
  DType cpu = DType::f32;    // on the CPU (the reference and the CPU backend)
  int64_t offset_elems = 0;  // misalignment on the backend under test (the reference: none)
  Role role = Role::in;
  std::function<void(HostTensor&, const Values&)> gen;  // values of an input or accumulated output
  std::optional<Tol> tol_;
  Compare compare_;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // Values: uniform floats in [lo, hi) (the default is [-1, 1) with the tensor's index + 1 as
  // seed), integers in [lo, hi], given values, one value, or computed from earlier tensors'.
  TensorSpec& uniform(float lo, float hi, uint32_t seed) {
    gen = [=, n = numel()](HostTensor& h, const Values&) { h.f = random_vector(n, seed, lo, hi); };
    return *this;
  }
  TensorSpec& ints(int32_t lo, int32_t hi, uint32_t seed) {
    gen = [=, n = numel()](HostTensor& h, const Values&) { h.i = random_ints(n, seed, lo, hi); };
    return *this;
  }
  TensorSpec& values(std::vector<float> v) {
    gen = [v = std::move(v)](HostTensor& h, const Values&) { h.f = v; };
    return *this;
  }
  TensorSpec& values(std::vector<int32_t> v) {
    gen = [v = std::move(v)](HostTensor& h, const Values&) { h.i = v; };
    return *this;
  }
  TensorSpec& fill(float x) { return values(std::vector<float>(numel(), x)); }
  TensorSpec& from(std::function<std::vector<float>(const Values&)> fn) {
    gen = [fn = std::move(fn)](HostTensor& h, const Values& v) { h.f = fn(v); };
    return *this;
  }
  TensorSpec& from_ints(std::function<std::vector<int32_t>(const Values&)> fn) {
    gen = [fn = std::move(fn)](HostTensor& h, const Values& v) { h.i = fn(v); };
    return *this;
  }
  TensorSpec& offset(int64_t elements) {
    offset_elems = elements;
    return *this;
  }
  TensorSpec& cpu_dtype(DType dt) {  // where the CPU path takes this dtype (e.g. a bf16 copy)
    cpu = dt;
    return *this;
  }
  TensorSpec& accumulated() {  // an output the op adds to: starts from its values
    role = Role::acc;
    return *this;
  }
  TensorSpec& tol(Tol t) {
    tol_ = t;
    return *this;
  }
  TensorSpec& tol(double rel_l2) {
    Tol t;
    t.rel_l2 = rel_l2;
    return tol(t);
  }
  TensorSpec& exact() { return tol(exact_tol()); }
  TensorSpec& compare(Compare fn) {
    compare_ = std::move(fn);
    return *this;
  }
  Tol tolerance() const {
    if (tol_) return *tol_;
    return dtype == DType::i32 ? exact_tol() : Tol{dtype_tol(dtype)};
  }
};

// What run() gets: the case's tensors on one backend, by name.
struct OpArgs {
  Device device = Device::cpu;
  std::map<std::string, Tensor> tensors;
  std::map<std::string, double> scalars;
  Tensor operator[](const std::string& name) const {
    auto it = tensors.find(name);
    LINGUA_CHECK(it != tensors.end(), "op test: no tensor '", name, "'");
    return it->second;
  }
  Tensor opt(const std::string& name) const {  // Tensor() when the case has no such tensor
    auto it = tensors.find(name);
    return it == tensors.end() ? Tensor() : it->second;
  }
  void set(const std::string& scalar, double v) { scalars[scalar] = v; }  // compared when declared
};

// One case of an op. Tensors are generated, built and passed in declaration order.
struct OpCase {
  std::string op, label;
  std::deque<TensorSpec> tensors;  // a deque: references returned by in() / out() stay valid
  std::vector<std::pair<std::string, double>> scalars;  // name, relative tolerance on the GPU
  std::function<void(OpArgs&)> run;
  // Optional checks beyond the per-output comparisons (in, the backend's results, the reference's).
  std::function<void(const Values& in, const Values& got, const Values& ref)> check;

  explicit OpCase(std::string op_, std::string label_ = "") : op(std::move(op_)), label(std::move(label_)) {}
  TensorSpec& in(const std::string& name, std::vector<int64_t> shape, DType dt = DType::f32) {
    return add(name, std::move(shape), dt, Role::in);
  }
  TensorSpec& out(const std::string& name, std::vector<int64_t> shape, DType dt = DType::f32) {
    return add(name, std::move(shape), dt, Role::out);
  }
  TensorSpec& tensor(const std::string& name) {  // a declared tensor, to adjust it
    for (TensorSpec& t : tensors)
      if (t.name == name) return t;
    fail("op test: no tensor '", name, "' in ", op);
  }
  // A value run() reports with OpArgs::set: |got - ref| <= rel * |ref| on the GPU.
  void scalar(const std::string& name, double rel) { scalars.emplace_back(name, rel); }

  std::string describe(Device dev) const {
    std::ostringstream os;
    os << op << (label.empty() ? "" : " [" + label + "]") << " on " << device_name(dev) << ":";
    for (const TensorSpec& t : tensors) {
      os << (t.role == Role::in ? " " : t.role == Role::out ? " out " : " acc ") << t.name << "[";
      for (size_t i = 0; i < t.shape.size(); ++i) os << (i ? "," : "") << t.shape[i];
      os << "]" << dtype_name(dev == Device::cuda ? t.dtype : t.cpu);
      if (t.offset_elems) os << "+" << t.offset_elems;
    }
    return os.str();
  }

 private:
  TensorSpec& add(const std::string& name, std::vector<int64_t> shape, DType dt, Role role) {
    TensorSpec& t = tensors.emplace_back();
    t.name = name;
    t.shape = std::move(shape);
    t.dtype = dt;
    t.cpu = dt == DType::i32 ? DType::i32 : DType::f32;
    t.role = role;
    t.uniform(-1.0f, 1.0f, (uint32_t)tensors.size());
    return t;
  }
};

namespace harness_detail {

inline Values generate(const OpCase& c) {
  Values v;
  for (const TensorSpec& t : c.tensors) {
    if (t.role == Role::out) continue;
    HostTensor h;
    h.dtype = t.dtype;
    t.gen(h, v);
    const size_t got = t.dtype == DType::i32 ? h.i.size() : h.f.size();
    LINGUA_CHECK(got == (size_t)t.numel(), "op test: ", t.name, " generated ", got, " values for ", t.numel(),
                 " elements of ", dtype_name(t.dtype));
    h.f = as_dtype(std::move(h.f), t.dtype);
    v.tensors[t.name] = std::move(h);
  }
  return v;
}

inline HostTensor read_back(const DeviceTensor& d) {
  HostTensor h;
  h.dtype = d.t.dtype;
  if (h.dtype == DType::i32)
    h.i = d.download_i32();
  else
    h.f = d.download();
  return h;
}

// The reference's outputs start as NaN of other bits than the backend's poison (0x7FC00000, not
// all ones; i32: 0x7FC00000), so an element either side leaves unwritten fails the bitwise
// comparison.
inline void fill_reference_poison(DeviceTensor& d) {
  if (d.t.dtype == DType::i32)
    d.upload(std::vector<int32_t>(d.t.numel(), 0x7FC00000));
  else
    d.upload(std::vector<float>(d.t.numel(), std::numeric_limits<float>::quiet_NaN()));
}

// Builds the case's tensors on dev from `in` (the reference: f32 on the CPU, no offsets), runs
// it and reads the outputs back. Inputs must come back unchanged.
inline Values execute(const OpCase& c, const Values& in, Device dev, bool reference) {
  std::deque<DeviceTensor> mem;
  OpArgs args;
  args.device = dev;
  for (const TensorSpec& t : c.tensors) {
    const DType dt = dev == Device::cuda ? t.dtype : t.cpu;
    DeviceTensor& d = mem.emplace_back(t.shape, dt, reference ? 0 : t.offset_elems, dev);
    if (t.role == Role::out && reference)
      fill_reference_poison(d);
    else if (t.role == Role::out)
      d.poison();
    else if (dt == DType::i32)
      d.upload(in.ints(t.name));
    else
      d.upload(in[t.name]);
    args.tensors[t.name] = d.t;
  }
  const char* who = reference ? "the CPU reference" : "the op";
  try {
    c.run(args);
  } catch (const std::exception& e) {
    ADD_FAILURE() << who << " threw: " << e.what();
  }
  Values got;
  for (size_t k = 0; k < mem.size(); ++k) {
    const TensorSpec& t = c.tensors[k];
    HostTensor h = read_back(mem[k]);
    if (t.role != Role::in) {
      got.tensors[t.name] = std::move(h);
    } else if (h.dtype == DType::i32) {
      EXPECT_TRUE(same_bits(h.i, in.ints(t.name), std::string(who) + " modified input " + t.name));
    } else {
      EXPECT_TRUE(same_bits(h.f, as_dtype(in[t.name], h.dtype), std::string(who) + " modified input " + t.name));
    }
  }
  got.scalars = args.scalars;
  for (const auto& [name, tol] : c.scalars)
    if (!args.scalars.count(name)) ADD_FAILURE() << who << " did not report scalar " << name;
  return got;
}

inline ::testing::AssertionResult within(const std::vector<float>& got, const std::vector<float>& ref, Tol tol,
                                         const std::string& what) {
  for (size_t i = 0; i < ref.size(); ++i)
    if (std::isnan(ref[i])) return ::testing::AssertionFailure() << what << ": the reference is NaN at " << i;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::isnan(got[i])) return ::testing::AssertionFailure() << what << ": NaN at " << i << " (not written?)";
  const double err = rel_l2(got, ref);
  if (!(err < tol.rel_l2))
    return ::testing::AssertionFailure() << what << ": relative L2 error " << err << ", tolerance " << tol.rel_l2;
  if (tol.max_abs >= 0) {
    size_t worst = 0;
    double diff = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      if (std::fabs((double)got[i] - ref[i]) > diff) diff = std::fabs((double)got[i] - ref[i]), worst = i;
    if (diff > tol.max_abs)
      return ::testing::AssertionFailure() << what << ": max abs error " << diff << " > " << tol.max_abs
                                           << " at " << worst << " (" << got[worst] << " vs " << ref[worst] << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace harness_detail

// Runs one case on dev against the CPU reference (see the top of the file); returns the
// backend's results (outputs and scalars), e.g. to compare two calls bitwise.
inline Values check_case(Device dev, const OpCase& c) {
  SCOPED_TRACE(c.describe(dev));
  Values in, ref, got;
  try {
    in = harness_detail::generate(c);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "generating the inputs threw: " << e.what();
    return got;
  }
  ref = harness_detail::execute(c, in, Device::cpu, true);
  got = harness_detail::execute(c, in, dev, false);
  for (const TensorSpec& t : c.tensors) {
    if (t.role == Role::in || !got.has(t.name) || !ref.has(t.name)) continue;
    const HostTensor &g = got.at(t.name), &r = ref.at(t.name);
    const std::string what = "output " + t.name + " (" + dtype_name(g.dtype) + ")";
    const Tol tol = t.tolerance();
    if (g.dtype == DType::i32)
      EXPECT_TRUE(same_bits(g.i, r.i, what));
    else if (dev == Device::cpu || tol.exact)
      EXPECT_TRUE(same_bits(g.f, as_dtype(r.f, g.dtype), what));
    else if (t.compare_)
      EXPECT_TRUE(t.compare_(g.f, r.f, in)) << what;
    else
      EXPECT_TRUE(harness_detail::within(g.f, r.f, tol, what));
  }
  for (const auto& [name, rel] : c.scalars) {
    if (!got.scalars.count(name) || !ref.scalars.count(name)) continue;
    const double g = got.scalar(name), r = ref.scalar(name);
    if (dev == Device::cpu)
      EXPECT_TRUE(same_bits(g, r, "scalar " + name));
    else
      EXPECT_LE(std::fabs(g - r), rel * std::fabs(r)) << "scalar " << name << ": " << g << " vs " << r;
  }
  if (c.check) c.check(in, got, ref);
  return got;
}

// check_case for each case; stops after 10 failing cases.
inline void check_cases(Device dev, const std::vector<OpCase>& cases) {
  const auto failures = [] {
    return ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
  };
  int failed = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const int before = failures();
    check_case(dev, cases[k]);
    if (failures() > before && ++failed == 10) {
      ADD_FAILURE() << "stopped after 10 failing cases (" << k + 1 << " of " << cases.size() << " run)";
      return;
    }
  }
}

}  // namespace lingua::test_util

// Two tests over one list of cases: Suite##Cuda.Name (the GPU against the CPU reference, skipped
// without a GPU) and Suite##CpuBackend.Name (the CPU through the same harness: bitwise).
#define LINGUA_OP_TEST(Suite, Name, cases)                                                           \
  TEST(Suite##CpuBackend, Name) { ::lingua::test_util::check_cases(::lingua::Device::cpu, cases); } \
  TEST(Suite##Cuda, Name) {                                                                          \
    LINGUA_REQUIRE_GPU();                                                                            \
    ::lingua::test_util::check_cases(::lingua::Device::cuda, cases);                                 \
  }
