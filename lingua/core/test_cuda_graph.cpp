// CUDA graphs (CudaGraph), pinned memory and asynchronous uploads, and the clear errors of the
// functions that cannot run inside a capture. GPU tests skip without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef LINGUA_CUDA
#include <cuda_runtime_api.h>
#endif

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/ops/cast/cast.h"
#include "lingua/ops/testing.h"
#include "lingua/ops/testing_cuda.h"

using namespace lingua;
using namespace lingua::test_util;

namespace {

// Expects f() to throw a lingua Error whose message contains `part`.
template <class F>
void expect_error(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error (expected '" << part << "')";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

std::vector<float> download_f32(const DeviceBuffer& b, size_t n) {
  std::vector<float> v(n);
  copy_to_host(v.data(), b.data(), n * 4);
  return v;
}
std::vector<uint16_t> download_u16(const DeviceBuffer& b, size_t n) {
  std::vector<uint16_t> v(n);
  copy_to_host(v.data(), b.data(), n * 2);
  return v;
}

// x (f32) -> stage (f32) by a device copy -> h (bf16) -> y (f32) by two casts: y = round_to_bf16(x).
struct Pipeline {
  int64_t n;
  DeviceBuffer x, stage, h, y;
  explicit Pipeline(int64_t n_) : n(n_), x(n * 4), stage(n * 4), h(n * 2), y(n * 4) {}
  Tensor T(const DeviceBuffer& b, DType dt) const { return Tensor(b.data(), {n}, dt, Device::cuda); }
  void run() const {
    copy_device_to_device(stage.data(), x.data(), n * 4);
    cast_into(T(h, DType::bf16), T(stage, DType::f32));
    cast_into(T(y, DType::f32), T(h, DType::bf16));
  }
  // y and h hold the results for input v, bit for bit.
  void expect_results(const std::vector<float>& v, const std::string& what) const {
    const auto yv = download_f32(y, n);
    const auto hv = download_u16(h, n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(hv[i], float_to_bf16(v[i])) << what << " at " << i;
      const float r = round_to_bf16(v[i]);
      ASSERT_EQ(0, std::memcmp(&yv[i], &r, 4)) << what << " at " << i << ": " << yv[i] << " vs " << r;
    }
  }
};

// Non-zero values (|v| >= 0.25) of both signs.
std::vector<float> nonzero_input(int64_t n, uint32_t seed) {
  auto v = random_vector(n, seed, 0.25f, 4.0f);
  for (int64_t i = 0; i < n; i += 3) v[i] = -v[i];
  return v;
}

TEST(CudaGraph, WithoutGpuFailsClearly) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  EXPECT_FALSE(cuda_stream_capturing());
  CudaGraph g;
  EXPECT_FALSE(g.ready());
  EXPECT_FALSE(g.capturing());
  EXPECT_THROW(g.begin_capture(), Error);
  EXPECT_FALSE(g.capturing());
  EXPECT_THROW(g.launch(), Error);
  g.abort_capture();  // nothing to abort
  g.reset();
  EXPECT_THROW(PinnedBuffer(64), Error);
  EXPECT_THROW(copy_to_device_async(nullptr, nullptr, 4), Error);
}

TEST(CudaGraph, PinnedBufferIsMovable) {
  LINGUA_REQUIRE_GPU();
  PinnedBuffer a(100);
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(a.bytes(), 100u);
  a.as<float>()[24] = 3.5f;
  void* p = a.data();
  PinnedBuffer b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.bytes(), 0u);
  PinnedBuffer c(8);
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.as<float>()[24], 3.5f);
  EXPECT_EQ(PinnedBuffer(0).data(), nullptr);
}

TEST(CudaGraph, CaptureRecordsThenReplaysWithNewInputs) {
  LINGUA_REQUIRE_GPU();
  const int64_t n = 1237;  // odd: the casts' element-by-element tails
  Pipeline p(n);
  poison(p.h);
  poison(p.y);
  PinnedBuffer in(n * 4);
  const auto v1 = nonzero_input(n, 1), v2 = nonzero_input(n, 2);
  std::memcpy(in.data(), v1.data(), n * 4);
  copy_to_device_async(p.x.data(), in.data(), n * 4);  // before the capture: eager, not recorded

  CudaGraph g;
  EXPECT_FALSE(cuda_stream_capturing());
  g.begin_capture();
  EXPECT_TRUE(g.capturing());
  EXPECT_TRUE(cuda_stream_capturing());
  p.run();
  g.end_capture();
  EXPECT_FALSE(g.capturing());
  EXPECT_FALSE(cuda_stream_capturing());
  ASSERT_TRUE(g.ready());
  EXPECT_GE(g.num_nodes(), 3u);
  // Captured, not run: the outputs still hold the poison.
  for (float f : download_f32(p.y, n)) ASSERT_TRUE(std::isnan(f));

  g.launch();
  p.expect_results(v1, "first launch");
  // The copy above waited for the stream, so the pinned input may be rewritten.
  std::memcpy(in.data(), v2.data(), n * 4);
  copy_to_device_async(p.x.data(), in.data(), n * 4);
  g.launch();
  p.expect_results(v2, "second launch");
  // Launches queue like any other work: two in a row, then one read.
  g.launch();
  g.launch();
  p.expect_results(v2, "repeated launches");

  // Moving keeps the graph; reset() drops it.
  CudaGraph moved = std::move(g);
  EXPECT_FALSE(g.ready());
  ASSERT_TRUE(moved.ready());
  moved.launch();
  cuda_synchronize();
  moved.reset();
  EXPECT_FALSE(moved.ready());
  EXPECT_THROW(moved.launch(), Error);
}

TEST(CudaGraph, SynchronisingCallsFailClearlyInsideACapture) {
  LINGUA_REQUIRE_GPU();
  const int64_t n = 301;
  Pipeline p(n);
  const auto v = nonzero_input(n, 3);
  copy_to_device(p.x.data(), v.data(), n * 4);
  (void)cuda_op_scratch(1 << 20);
  std::vector<float> host(n);
  {
    CudaGraph g;
    g.begin_capture();
    p.run();
    expect_error([&] { copy_to_host(host.data(), p.y.data(), n * 4); },
                 "copy_to_host: would synchronise inside a CUDA graph capture");
    expect_error([&] { copy_to_device(p.x.data(), v.data(), n * 4); },
                 "copy_to_device: would synchronise inside a CUDA graph capture");
    expect_error([&] { cuda_synchronize(); }, "cuda_synchronize: would synchronise inside a CUDA graph capture");
    expect_error([&] { cuda_op_scratch(size_t(1) << 34); },
                 "cuda_op_scratch: would synchronise inside a CUDA graph capture");
    expect_error([&] { DeviceBuffer b(64); }, "DeviceBuffer: would allocate 64 bytes inside a CUDA graph capture");
    expect_error([&] { PinnedBuffer b(64); }, "PinnedBuffer: would allocate 64 bytes inside a CUDA graph capture");
    EXPECT_NO_THROW(cuda_op_scratch(1 << 20));  // already that large: no growth, no error
    expect_error([&] { g.begin_capture(); }, "already capturing");
    CudaGraph other;
    expect_error([&] { other.begin_capture(); }, "already being captured");
    // The errors were raised before calling CUDA: the capture is intact and usable.
    EXPECT_TRUE(cuda_stream_capturing());
    g.end_capture();
    ASSERT_TRUE(g.ready());
    poison(p.y);
    g.launch();
    p.expect_results(v, "graph captured around the errors");
  }
  // Eager work afterwards runs normally.
  const auto w = nonzero_input(n, 4);
  copy_to_device(p.x.data(), w.data(), n * 4);
  p.run();
  p.expect_results(w, "eager after the capture");
}

TEST(CudaGraph, ExceptionDuringCaptureLeavesTheStreamUsable) {
  LINGUA_REQUIRE_GPU();
  const int64_t n = 77;
  Pipeline p(n);
  const auto v = nonzero_input(n, 5);
  copy_to_device(p.x.data(), v.data(), n * 4);
  // The destructor ends the capture an exception left open.
  try {
    CudaGraph g;
    g.begin_capture();
    p.run();
    throw std::runtime_error("step failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(cuda_stream_capturing());
  poison(p.y);
  p.run();
  p.expect_results(v, "eager after a destroyed capture");

  // abort_capture() discards it explicitly; the graph can then capture again.
  CudaGraph g;
  g.begin_capture();
  p.run();
  g.abort_capture();
  EXPECT_FALSE(g.capturing());
  EXPECT_FALSE(g.ready());
  EXPECT_FALSE(cuda_stream_capturing());
  g.begin_capture();
  p.run();
  g.end_capture();
  poison(p.y);
  g.launch();
  p.expect_results(v, "recaptured after an abort");
}

TEST(CudaGraph, InvalidatedCaptureFailsAtEndWithTheCudaError) {
  LINGUA_REQUIRE_GPU();
#ifdef LINGUA_CUDA
  const int64_t n = 99;
  Pipeline p(n);
  const auto v = nonzero_input(n, 6);
  copy_to_device(p.x.data(), v.data(), n * 4);
  CudaGraph g;
  g.begin_capture();
  p.run();
  // An unguarded synchronisation, straight through the runtime, invalidates the capture.
  EXPECT_NE(cudaStreamSynchronize(static_cast<cudaStream_t>(cuda_stream_handle())), cudaSuccess);
  cudaGetLastError();
  try {
    g.end_capture();
    ADD_FAILURE() << "end_capture succeeded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("CudaGraph::end_capture: the capture failed ("), std::string::npos) << msg;
  }
  EXPECT_FALSE(g.ready());
  EXPECT_FALSE(g.capturing());
  EXPECT_FALSE(cuda_stream_capturing());
  poison(p.y);
  p.run();
  p.expect_results(v, "eager after a failed capture");
#endif
}

TEST(CudaGraph, LaunchRefusesAfterAScratchReallocation) {
  LINGUA_REQUIRE_GPU();
  const int64_t n = 64;
  Pipeline p(n);
  CudaGraph g;
  g.begin_capture();
  p.run();
  g.end_capture();
  g.launch();
  const uint64_t epoch = cuda_scratch_epoch();
  for (size_t bytes = 1 << 20; cuda_scratch_epoch() == epoch; bytes *= 2) cuda_op_scratch(bytes);
  expect_error([&] { g.launch(); }, "reallocated after the capture");
  g.begin_capture();
  p.run();
  g.end_capture();
  EXPECT_NO_THROW(g.launch());
  cuda_synchronize();
}

}  // namespace
