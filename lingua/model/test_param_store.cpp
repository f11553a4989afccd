// ParamStore and StepScalars: placements (a parameter's values do not depend on how it is split),
// open inits, parameters added / removed / frozen after the layout, axis roles across a model, the
// per-step scalars' slots; on the GPU: no host mirror, layout changes on the device, and a
// captured graph reading each step's uploaded scalar.
#include <gtest/gtest.h>

#include <map>

#include "lingua/core/cuda.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/transformer.h"

using namespace lingua;

namespace {

ParamSpec spec(const std::string& name, std::vector<int64_t> shape, ParamInit init, Placement pl = {}) {
  ParamSpec p;
  p.name = name;
  p.shape = std::move(shape);
  p.init = std::move(init);
  p.placement = pl;
  return p;
}

std::vector<float> values_of(const ParamSpec& s, uint64_t seed) {
  ParamStore store;
  const int id = store.add(s);
  store.finalize();
  store.init(seed);
  return store.host_param(id);
}

ModelConfig tiny(const std::string& ffn) {
  ModelConfig c;
  c.dim = 24;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = 19;
  c.max_seqlen = 16;
  c.ffn = ffn;
  return c;
}

}  // namespace

TEST(ParamStore, SplitParametersHoldSlicesOfTheWholeInit) {
  const std::vector<float> whole = values_of(spec("t", {6, 8}, ParamInit::trunc_normal(0.1f)), 5);
  for (int r = 0; r < 4; ++r) {  // column slices of 2
    const std::vector<float> local = values_of(spec("t", {6, 8}, ParamInit::trunc_normal(0.1f), Placement::ColumnSlice(4, r)), 5);
    ASSERT_EQ(local.size(), 12u);
    for (int row = 0; row < 6; ++row)
      for (int c = 0; c < 2; ++c) EXPECT_EQ(local[row * 2 + c], whole[row * 8 + r * 2 + c]) << r << "," << row;
  }
  for (int size : {3, 5})  // flat shards of ceil(48 / size), the last one padded with zeros
    for (int r = 0; r < size; ++r) {
      const std::vector<float> local = values_of(spec("t", {6, 8}, ParamInit::trunc_normal(0.1f), Placement::FlatShard(size, r)), 5);
      const int64_t chunk = (48 + size - 1) / size;
      ASSERT_EQ((int64_t)local.size(), chunk);
      for (int64_t i = 0; i < chunk; ++i) EXPECT_EQ(local[i], r * chunk + i < 48 ? whole[r * chunk + i] : 0.0f) << size << "/" << r;
    }
  ParamStore bad;
  EXPECT_THROW(bad.add(spec("t", {6, 8}, ParamInit::ones(), Placement::ColumnSlice(3, 0))), Error);  // 8 % 3
}

TEST(ParamStore, OpenInitAndLayoutChanges) {
  ParamInit iota;
  iota.what = "iota";
  iota.fill = [](uint64_t seed, const ParamInfo& p, float* w) {
    for (int64_t i = 0; i < p.numel; ++i) w[i] = (float)(p.global_index(i) + (int64_t)seed);
  };
  ParamStore s;
  const int a = s.add(spec("a", {3}, iota)), b = s.add(spec("b", {2, 2}, ParamInit::trunc_normal(1.0f)));
  s.finalize();
  s.init(10);
  EXPECT_EQ(s.host_param(a), (std::vector<float>{10, 11, 12}));
  const std::vector<float> vb = s.host_param(b);
  const int c = s.add(spec("c", {5}, iota), a);  // after a: between a and b in the layout
  EXPECT_EQ(s.ids(), (std::vector<int>{a, c, b}));
  EXPECT_EQ(s.host_param(c), (std::vector<float>{10, 11, 12, 13, 14}));
  EXPECT_EQ(s.host_param(b), vb);
  EXPECT_LT(s.info(c).offset, s.info(b).offset);
  s.set_trainable(a, false);
  EXPECT_EQ(s.grad(a).data, nullptr);
  EXPECT_EQ(s.info(c).grad_offset, 0);
  EXPECT_EQ(s.host_param(a), (std::vector<float>{10, 11, 12}));
  // A parameter larger than the whole store so far: laid out, initialised, nothing else moved.
  const int big = s.add(spec("big", {64, 64}, iota));
  EXPECT_EQ(s.host_param(big)[4095], 4095.0f + 10.0f);
  EXPECT_EQ(s.host_param(b), vb);
  s.remove(big);
  s.remove(c);
  EXPECT_EQ(s.ids(), (std::vector<int>{a, b}));
  EXPECT_EQ(s.host_param(b), vb);
  EXPECT_THROW(s.info(c), Error);
  EXPECT_THROW(s.add(spec("b", {1}, iota)), Error);  // declared twice
  EXPECT_THROW(s.add(spec("d", {1}, iota), 12345), Error);  // after an unknown id: nothing added
  EXPECT_EQ(s.find("d"), -1);
  EXPECT_EQ(s.ids(), (std::vector<int>{a, b}));
}

// Every parameter of a model says what its axes are, and an axis role has one size everywhere.
TEST(ParamStore, AxisRolesAreConsistentAcrossTheModel) {
  for (const std::string ffn : {"swiglu", "stem"}) {
    ModelConfig cfg = tiny(ffn);
    ModelDims d = resolve_dims(cfg, cfg.vocab_size);
    Transformer m(cfg, d);
    std::map<std::string, int64_t> size;
    for (int id : m.params().ids()) {
      const ParamInfo& p = m.params().info(id);
      ASSERT_EQ(p.axes.size(), p.shape.size()) << p.name;
      for (size_t k = 0; k < p.axes.size(); ++k) {
        auto [it, fresh] = size.emplace(p.axes[k], p.shape[k]);
        EXPECT_EQ(it->second, p.shape[k]) << p.name << " axis " << p.axes[k];
      }
    }
    EXPECT_EQ(size.at("dim"), d.dim);
    EXPECT_EQ(size.at("hidden"), d.hidden);
    EXPECT_EQ(size.at("vocab"), d.vocab);
    EXPECT_EQ(size.at("q_heads"), d.n_heads * d.head_dim);
    EXPECT_EQ(size.at("kv_heads"), d.n_kv_heads * d.head_dim);
  }
}

TEST(StepScalars, SlotsAndRegions) {
  StepScalars sc;
  const size_t a = sc.slot("lr", 12, StepScalars::Writer::host);
  const size_t b = sc.slot("norm", 24, StepScalars::Writer::device);
  const size_t c = sc.slot("alpha", 4, StepScalars::Writer::host);
  EXPECT_EQ(sc.slot("lr", 12, StepScalars::Writer::host), a);
  EXPECT_THROW(sc.slot("lr", 8, StepScalars::Writer::host), Error);
  EXPECT_EQ(a, 0u);
  EXPECT_EQ(c, 16u);  // 16-byte aligned
  EXPECT_EQ(b, StepScalars::kRegionBytes);
  *sc.staged<float>(c) = 0.25f;  // on the CPU the staging copy is the buffer
  sc.upload();
  EXPECT_EQ(*sc.at<float>(c), 0.25f);
  *sc.at<double>(b) = 3.5;
  double back = 0;
  sc.read(b, &back, sizeof back);
  EXPECT_EQ(back, 3.5);
}

TEST(ParamStoreCuda, NoHostMirrorAndLayoutChangesOnTheDevice) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  ParamStore s;
  const int a = s.add(spec("a", {37, 5}, ParamInit::trunc_normal(0.3f)));
  const int b = s.add(spec("b", {4, 9}, ParamInit::trunc_normal(0.3f)));
  s.finalize();
  s.init(2);
  EXPECT_GT(s.host_bytes(), 0u);
  const std::vector<float> va = s.host_param(a), vb = s.host_param(b);
  s.to_device(Device::cuda);
  EXPECT_EQ(s.host_bytes(), 0u);
  EXPECT_EQ(s.host_param(a), va);
  auto bf16_of = [&](int id) {
    const Tensor t = s.compute_param(id);
    std::vector<uint16_t> h(t.numel());
    copy_to_host(h.data(), t.data, h.size() * 2);
    return h;
  };
  const std::vector<uint16_t> ba = bf16_of(a);
  const int c = s.add(spec("c", {3}, ParamInit::ones()), -1);
  s.remove(b);
  EXPECT_EQ(s.host_param(a), va);
  EXPECT_EQ(bf16_of(a), ba);
  EXPECT_EQ(s.host_param(c), std::vector<float>(3, 1.0f));
  EXPECT_EQ(s.host_bytes(), 0u);
  (void)vb;
}

// A host-written slot read by a captured graph: each launch sees the value uploaded before it.
TEST(StepScalarsCuda, CapturedGraphReadsEachUploadedValue) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  StepScalars sc;
  const size_t slot = sc.slot("alpha", sizeof(float), StepScalars::Writer::host);
  sc.to_device(Device::cuda);
  DeviceBuffer out(sizeof(float));
  CudaGraph g;
  g.begin_capture();
  copy_device_to_device(out.data(), sc.at(slot), sizeof(float));
  g.end_capture();
  for (float v : {1.5f, -2.0f, 0.125f}) {
    *sc.staged<float>(slot) = v;
    sc.upload();
    g.launch();
    float got = 0;
    copy_to_host(&got, out.data(), sizeof got);
    EXPECT_EQ(got, v);
  }
}
