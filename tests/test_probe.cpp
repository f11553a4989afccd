// The probe (lingua/train/probe.h, probe_freq):
//  - moments: mean, std, skew, kurtosis, abs_mean of known values; streams add up;
//  - on a small model, every Linear's weight and weight_grad statistics are those of the store's
//    values and of an independent forward/backward's gradients; wq's input is the attention
//    norm's output and its output that input times wq, computed here; attention entropy equals
//    log(t + 1) averaged over the query rows when the queries are zero (uniform attention);
//  - training with probe_freq writes one line per probe step and is bitwise the run without;
//  - on the GPU (skipped without one): the statistics follow the CPU's, and graph training with the
//    probe is bitwise the run without.
#include <gtest/gtest.h>

#include <cmath>

#include "lingua/core/cuda.h"
#include "lingua/exec/testing.h"
#include "lingua/model/dims.h"
#include "lingua/train/probe.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using lingua::test_util::random_ids;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

ModelConfig small_model() {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = 29;
  c.max_seqlen = 16;
  c.seed = 3;
  return c;
}

json stats_of(const std::vector<float>& v) {
  MomentSums m;
  m.add(v.data(), (int64_t)v.size());
  return m.stats();
}

void expect_stats_near(const json& got, const json& want, double rel, const std::string& what) {
  EXPECT_EQ(got["n"], want["n"]) << what;
  for (const char* k : {"mean", "std", "skew", "kurtosis", "abs_mean"}) {
    const double g = got[k], w = want[k];
    EXPECT_NEAR(g, w, rel * std::max(1e-3, std::fabs(w))) << what << " " << k;
  }
}

}  // namespace

TEST(ProbeMoments, KnownValuesAndStreams) {
  const std::vector<float> v = {1, 2, 3, 4, 10};
  const json s = stats_of(v);
  EXPECT_DOUBLE_EQ(s["mean"].get<double>(), 4.0);
  EXPECT_NEAR(s["std"].get<double>(), std::sqrt(10.0), 1e-12);
  EXPECT_NEAR(s["skew"].get<double>(), 36.0 / std::pow(10.0, 1.5), 1e-12);  // E[(x-4)^3] = 36
  EXPECT_NEAR(s["kurtosis"].get<double>(), 278.8 / 100.0, 1e-12);          // E[(x-4)^4] = 278.8
  EXPECT_DOUBLE_EQ(s["abs_mean"].get<double>(), 4.0);
  EXPECT_EQ(s["n"], 5);
  MomentSums two;
  two.add(v.data(), 2);
  two.add(v.data() + 2, 3);
  EXPECT_EQ(two.stats(), s);
  const json flat = stats_of({-2, -2, -2});
  EXPECT_EQ(flat["skew"], 0.0);
  EXPECT_EQ(flat["kurtosis"], 0.0);
  EXPECT_EQ(flat["abs_mean"], 2.0);
  EXPECT_EQ(MomentSums{}.stats()["n"], 0);
}

TEST(Probe, StatisticsAreThoseOfTheTensors) {
  const ModelConfig c = small_model();
  Transformer m(c, resolve_dims(c, c.vocab_size));
  Executor ex(m);
  const int B = 3, T = 9;
  const auto tok = random_ids(B * T, c.vocab_size, 1), tgt = random_ids(B * T, c.vocab_size, 2);
  const fs::path dir = test_e2e::temp_dir("probe_stats");
  Probe probe((dir / "probe" / "probe.0.jsonl").string(), 2);
  const json line = probe.run(ex, tok.data(), tgt.data(), B, T, 7);
  EXPECT_EQ(line["global_step"], 7);
  EXPECT_EQ(line["sequences"], 2);
  const int rows = 2 * T;
  const json& lin = line["linear"];
  for (int l = 0; l < c.n_layers; ++l)
    for (const char* n : {"attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1",
                          "feed_forward.w3", "feed_forward.w2"}) {
      const std::string key = "layers." + std::to_string(l) + "." + n;
      ASSERT_TRUE(lin.contains(key)) << key;
      for (const char* what : {"input", "output", "output_grad", "weight", "weight_grad"})  // (blocks' linears)
        EXPECT_TRUE(lin[key].contains(what)) << key << " " << what;
      EXPECT_EQ(lin[key]["input"]["n"], rows * (std::string(n) == "feed_forward.w2" ? resolve_dims(c, 0).hidden : c.dim))
          << key;
    }
  ASSERT_TRUE(lin.contains("output"));  // the head (its logits made for the probe; no output_grad)
  EXPECT_EQ(lin["output"]["output"]["n"], rows * c.vocab_size);
  EXPECT_FALSE(lin["output"].contains("output_grad"));

  // Weights: the store's values; weight gradients: an independent pass's.
  const ParamStore& p = m.params();
  Transformer m2(c, resolve_dims(c, c.vocab_size));
  Executor ex2(m2);
  int64_t counted = 0;
  for (int i = 0; i < rows; ++i) counted += tgt[(size_t)i] >= 0;
  m2.params().zero_grads();
  ex2.forward_backward(tok.data(), tgt.data(), 2, T, 1.0f / (float)counted);
  for (int id : p.ids()) {
    std::string key = p.info(id).name;
    key.resize(key.size() - 7);  // (".weight")
    if (!lin.contains(key)) continue;
    EXPECT_EQ(lin[key]["weight"], stats_of(p.host_param(id))) << key;
    const std::vector<float> all = m2.params().host_grads();
    const ParamInfo& q = m2.params().info(m2.params().index(p.info(id).name));
    const std::vector<float> g(all.begin() + q.grad_offset, all.begin() + q.grad_offset + q.numel);
    expect_stats_near(lin[key]["weight_grad"], stats_of(g), 1e-9, key + " weight_grad");
  }

  // wq of layer 0: input = attention_norm(embedding rows), output = input wq^T, computed here.
  const std::vector<float> emb = p.host_param(p.index("tok_embeddings.weight"));
  const std::vector<float> nw = p.host_param(p.index("layers.0.attention_norm.weight"));
  const std::vector<float> wq = p.host_param(p.index("layers.0.attention.wq.weight"));
  const int D = c.dim, Q = c.n_heads * (D / c.n_heads);
  std::vector<float> in((size_t)rows * D), out((size_t)rows * Q);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int d = 0; d < D; ++d) ss += (double)emb[(size_t)tok[(size_t)r] * D + d] * emb[(size_t)tok[(size_t)r] * D + d];
    const double rs = 1.0 / std::sqrt(ss / D + c.norm_eps);
    for (int d = 0; d < D; ++d) in[(size_t)r * D + d] = (float)(emb[(size_t)tok[(size_t)r] * D + d] * rs * nw[d]);
    for (int o = 0; o < Q; ++o) {
      double s = 0;
      for (int d = 0; d < D; ++d) s += (double)in[(size_t)r * D + d] * wq[(size_t)o * D + d];
      out[(size_t)r * Q + o] = (float)s;
    }
  }
  expect_stats_near(lin["layers.0.attention.wq"]["input"], stats_of(in), 1e-4, "wq input");
  expect_stats_near(lin["layers.0.attention.wq"]["output"], stats_of(out), 1e-4, "wq output");

  // The line is in the file; a second run appends.
  probe.run(ex, tok.data(), tgt.data(), B, T, 8);
  EXPECT_EQ(test_e2e::read_jsonl(dir / "probe" / "probe.0.jsonl").size(), 2u);
}

// With zero queries every attention row is uniform: entropy log(t + 1) at query row t.
TEST(Probe, AttentionEntropyOfUniformAttention) {
  const ModelConfig c = small_model();
  Transformer m(c, resolve_dims(c, c.vocab_size));
  ParamStore& p = m.params();
  const int wq = p.index("layers.1.attention.wq.weight");
  std::vector<float> zeros((size_t)p.info(wq).numel, 0.0f);
  p.set_param(wq, zeros.data());
  Executor ex(m);
  const int T = 9;
  const auto tok = random_ids(T, c.vocab_size, 5), tgt = random_ids(T, c.vocab_size, 6);
  Probe probe((test_e2e::temp_dir("probe_entropy") / "p.jsonl").string());
  const json line = probe.run(ex, tok.data(), tgt.data(), 1, T, 1);
  double want = 0;
  for (int t = 0; t < T; ++t) want += std::log(t + 1.0);
  want /= T;
  const json& e = line["attention_entropy"]["layers.1.attention"];
  EXPECT_EQ(e["queries"], T);
  ASSERT_EQ(e["per_head"].size(), (size_t)c.n_heads);
  for (const json& h : e["per_head"]) EXPECT_NEAR(h.get<double>(), want, 1e-9);
  // Layer 0's queries are not zero: its entropy is lower than uniform's and positive.
  const double e0 = line["attention_entropy"]["layers.0.attention"]["mean"];
  EXPECT_GT(e0, 0.0);
  EXPECT_LE(e0, want + 1e-9);
}

// probe_freq: one line per probe step under dump_dir/probe/, and training is bitwise unchanged.
TEST(Probe, TrainingWithTheProbeIsBitwiseTheSame) {
  const fs::path data = test_e2e::make_corpus("probe_train");
  TrainConfig a = test_e2e::tiny_config(data, test_e2e::temp_dir("probe_train_a"));
  TrainConfig b = test_e2e::tiny_config(data, test_e2e::temp_dir("probe_train_b"));
  b.probe_freq = 5;
  std::vector<float> wa, wb;
  const TrainResult ra = train(a, {nullptr, true, {}, [&](Executor& e) { wa = e.model().params().host_values(); }});
  const TrainResult rb = train(b, {nullptr, true, {}, [&](Executor& e) { wb = e.model().params().host_values(); }});
  EXPECT_EQ(ra.losses, rb.losses);
  EXPECT_EQ(wa, wb);
  EXPECT_FALSE(fs::exists(fs::path(a.dump_dir) / "probe"));
  const auto lines = test_e2e::read_jsonl(fs::path(b.dump_dir) / "probe" / "probe.0.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i]["global_step"], 5 * (int)(i + 1));
  EXPECT_TRUE(lines[0]["linear"].contains("layers.1.feed_forward.w2"));
}

TEST(ProbeCuda, StatisticsFollowTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  ModelConfig c = small_model();
  c.dim = 64;
  c.n_heads = 4;
  c.multiple_of = 32;
  Transformer cpu(c, resolve_dims(c, c.vocab_size)), gpu(c, resolve_dims(c, c.vocab_size));
  gpu.to_device(Device::cuda);
  Executor ec(cpu), eg(gpu);
  const int B = 2, T = 13;
  const auto tok = random_ids(B * T, c.vocab_size, 8), tgt = random_ids(B * T, c.vocab_size, 9);
  const fs::path dir = test_e2e::temp_dir("probe_cuda");
  const json lc = Probe((dir / "cpu.jsonl").string()).run(ec, tok.data(), tgt.data(), B, T, 1);
  const json lg = Probe((dir / "gpu.jsonl").string()).run(eg, tok.data(), tgt.data(), B, T, 1);
  for (const auto& [key, v] : lc["linear"].items()) {
    ASSERT_TRUE(lg["linear"].contains(key)) << key;
    EXPECT_EQ(lg["linear"][key]["weight"], v["weight"]) << key;  // the fp32 master weights
    for (const char* what : {"input", "output"}) {
      const json &g = lg["linear"][key][what], &w = v[what];
      EXPECT_EQ(g["n"], w["n"]) << key << what;
      EXPECT_NEAR(g["std"].get<double>(), w["std"].get<double>(), 0.03 * w["std"].get<double>()) << key << what;
      EXPECT_NEAR(g["abs_mean"].get<double>(), w["abs_mean"].get<double>(), 0.03 * w["abs_mean"].get<double>())
          << key << what;
    }
    const double gs = lg["linear"][key]["weight_grad"]["std"], ws = v["weight_grad"]["std"];
    EXPECT_NEAR(gs, ws, 0.05 * ws) << key << " weight_grad";
  }
  for (const auto& [key, v] : lc["attention_entropy"].items())
    EXPECT_NEAR(lg["attention_entropy"][key]["mean"].get<double>(), v["mean"].get<double>(), 0.02) << key;
}

// On the GPU with CUDA graphs (the default): the probe's eager passes between graph replays leave
// training bitwise as it is without them.
TEST(ProbeCuda, GraphTrainingWithTheProbeIsBitwiseTheSame) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const fs::path data = test_e2e::make_corpus("probe_train_cuda");
  TrainConfig a = test_e2e::tiny_config(data, test_e2e::temp_dir("probe_train_cuda_a"));
  TrainConfig b = test_e2e::tiny_config(data, test_e2e::temp_dir("probe_train_cuda_b"));
  a.device = b.device = "cuda";
  ASSERT_TRUE(a.cuda_graph && b.cuda_graph);
  b.probe_freq = 5;
  std::vector<float> wa, wb;
  const TrainResult ra = train(a, {nullptr, true, {}, [&](Executor& e) { wa = e.model().params().host_values(); }});
  const TrainResult rb = train(b, {nullptr, true, {}, [&](Executor& e) { wb = e.model().params().host_values(); }});
  EXPECT_GT(ra.graph_captures, 0);
  EXPECT_GT(rb.graph_captures, 0) << "the probe run trained without CUDA graphs";
  EXPECT_EQ(ra.losses, rb.losses);
  EXPECT_EQ(wa, wb);
  const auto lines = test_e2e::read_jsonl(fs::path(b.dump_dir) / "probe" / "probe.0.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_TRUE(lines[0]["linear"].contains("layers.1.feed_forward.w2"));
}
