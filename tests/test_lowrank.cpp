// The LowRank FFN (model.ffn=lowrank, lingua/model/ffn/lowrank.cpp), first of the structured FFN
// layers (SPEC §3), on the CPU reference path:
//  - finite-difference gradients of every parameter of a tiny model, both inits;
//  - with rank = dim and factors (I, W) it computes the dense SwiGLU layer (logits of a dense model);
//  - parameter counts and training FLOPs count the factors, not a dense layer;
//  - layer 0 stays dense by default; config errors name the key;
//  - on a GPU, training follows the CPU's loss curve (through Linear: bf16 cuBLASLt matmuls).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/config/config.h"
#include "lingua/core/cuda.h"
#include "lingua/exec/executor.h"
#include "lingua/exec/testing.h"
#include "lingua/model/transformer.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using lingua::test_util::random_ids;

namespace {

ModelConfig tiny(const std::string& ffn, int rank) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = 2;
  c.n_heads = 3;
  c.multiple_of = 4;
  c.vocab_size = 13;
  c.max_seqlen = 16;
  c.seed = 5;
  c.ffn = ffn;
  c.structured.rank = rank;
  return c;
}

void check_gradients(const ModelConfig& cfg, int structured_layers) {
  ModelDims d = resolve_dims(cfg, cfg.vocab_size);
  Transformer m(cfg, d);
  Executor ex(m);
  const int B = 2, T = 5;
  auto tok = random_ids(B * T, d.vocab, 1), tgt = random_ids(B * T, d.vocab, 2);
  const float scale = 0.1f;
  m.params().zero_grads();
  ex.forward_backward(tok.data(), tgt.data(), B, T, scale);
  const std::vector<float> grad = m.params().host_grads();
  std::mt19937 g(3);
  int factors = 0;
  for (int id : m.params().ids()) {
    const ParamInfo& p = m.params().info(id);
    factors += p.name.find(".b.weight") != std::string::npos || p.name.find(".a.weight") != std::string::npos;
    for (int k = 0; k < 6; ++k) {
      const int64_t e = (int64_t)(g() % p.numel), i = p.grad_offset + e;
      const double fd = test_util::finite_difference(ex, id, e, tok, tgt, B, T, scale);
      EXPECT_NEAR(grad[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << p.name << " entry " << e;
    }
  }
  EXPECT_EQ(factors, 5 * structured_layers) << "w13.a, w1.b, w3.b, w2.a, w2.b per structured layer";
}

}  // namespace

TEST(LowRank, GradientsMatchFiniteDifferences) {
  check_gradients(tiny("lowrank", 3), 1);
  ModelConfig x = tiny("lowrank", 5);
  x.structured.init = "xavier";
  x.structured.layers = std::vector<int>{0, 1};
  check_gradients(x, 2);
}

TEST(LowRank, FullRankWithIdentityFactorsIsTheDenseLayer) {
  const ModelConfig dc = tiny("swiglu", 0), lc = tiny("lowrank", 12);  // rank = dim
  const ModelDims d = resolve_dims(dc, dc.vocab_size);
  Transformer dense(dc, d), low(lc, resolve_dims(lc, lc.vocab_size));
  ParamStore &ds = dense.params(), &ls = low.params();
  auto values = [&](const std::string& name) { return ds.host_param(ds.index(name)); };
  auto set = [&](const std::string& name, const std::vector<float>& v) {
    const int id = ls.index(name);
    ASSERT_EQ((int64_t)v.size(), ls.info(id).numel) << name;
    std::copy(v.begin(), v.end(), ls.param(id).f32());
  };
  const int64_t D = d.dim;
  std::vector<float> eye((size_t)(D * D), 0.0f);
  for (int64_t i = 0; i < D; ++i) eye[(size_t)(i * D + i)] = 1.0f;
  const std::string f = "layers.1.feed_forward.";
  set(f + "w13.a.weight", eye);
  set(f + "w1.b.weight", values(f + "w1.weight"));
  set(f + "w3.b.weight", values(f + "w3.weight"));
  set(f + "w2.a.weight", values(f + "w2.weight"));
  set(f + "w2.b.weight", eye);
  for (int id : ls.ids())  // every other parameter is the same (drawn by name from the seed)
    if (ls.info(id).name.find(".a.weight") == std::string::npos && ls.info(id).name.find(".b.weight") == std::string::npos)
      EXPECT_EQ(ls.host_param(id), values(ls.info(id).name)) << ls.info(id).name;
  Executor de(dense), le(low);
  const int T = 7;
  const auto tok = random_ids(T, d.vocab, 9);
  std::vector<float> a((size_t)(T * d.vocab)), b(a.size());
  de.forward_logits(tok.data(), T, a.data());
  le.forward_logits(tok.data(), T, b.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-5 * (1 + std::fabs(a[i]))) << i;
}

// post_init svd: B A is the dense init's best rank-r approximation: exact at full rank; at rank r the
// residual W - B A is orthogonal to B's columns and A's rows and B A holds at least r/k of W's energy.
TEST(LowRank, SvdPostInitFactorsTheDenseInit) {
  const ModelConfig dc = tiny("swiglu", 0);
  const ModelDims d = resolve_dims(dc, dc.vocab_size);
  Transformer dense(dc, d);
  auto dense_w = [&](const std::string& n) { return dense.params().host_param(dense.params().index(n)); };
  const std::string f = "layers.1.feed_forward.";
  std::vector<float> fc1 = dense_w(f + "w1.weight");
  const std::vector<float> w3 = dense_w(f + "w3.weight"), fc2 = dense_w(f + "w2.weight");
  fc1.insert(fc1.end(), w3.begin(), w3.end());
  const int64_t D = d.dim, H = d.hidden;
  for (int r : {12, 4}) {  // 12 = dim: full rank for both linears
    SCOPED_TRACE("rank " + std::to_string(r));
    ModelConfig lc = tiny("lowrank", r);
    lc.structured.post_init = "svd";
    Transformer low(lc, resolve_dims(lc, lc.vocab_size));
    auto w = [&](const std::string& n) { return low.params().host_param(low.params().index(f + n)); };
    std::vector<float> b1 = w("w1.b.weight");
    const std::vector<float> b3 = w("w3.b.weight");
    b1.insert(b1.end(), b3.begin(), b3.end());
    struct Case {
      const std::vector<float>& W;
      std::vector<float> A, B;
      int64_t out, in;
    };
    for (const Case& c : {Case{fc1, w("w13.a.weight"), b1, 2 * H, D}, Case{fc2, w("w2.a.weight"), w("w2.b.weight"), D, H}}) {
      // P = B A, R = W - P
      std::vector<double> R((size_t)(c.out * c.in));
      double energy = 0, total = 0, err = 0;
      for (int64_t o = 0; o < c.out; ++o)
        for (int64_t i = 0; i < c.in; ++i) {
          double p = 0;
          for (int j = 0; j < r; ++j) p += (double)c.B[(size_t)(o * r + j)] * c.A[(size_t)(j * c.in + i)];
          const double wv = c.W[(size_t)(o * c.in + i)];
          R[(size_t)(o * c.in + i)] = wv - p;
          energy += p * p;
          total += wv * wv;
          err = std::max(err, std::fabs(wv - p));
        }
      const int64_t k = std::min(c.out, c.in);
      if (r == k) {
        EXPECT_LT(err, 1e-5) << "full rank reconstructs W";
        continue;
      }
      EXPECT_GE(energy, total * r / (double)k) << "the top singular directions";
      double orth = 0;  // max |B^T R| and |R A^T|
      for (int j = 0; j < r; ++j) {
        for (int64_t i = 0; i < c.in; ++i) {
          double t = 0;
          for (int64_t o = 0; o < c.out; ++o) t += c.B[(size_t)(o * r + j)] * R[(size_t)(o * c.in + i)];
          orth = std::max(orth, std::fabs(t));
        }
        for (int64_t o = 0; o < c.out; ++o) {
          double t = 0;
          for (int64_t i = 0; i < c.in; ++i) t += R[(size_t)(o * c.in + i)] * c.A[(size_t)(j * c.in + i)];
          orth = std::max(orth, std::fabs(t));
        }
      }
      EXPECT_LT(orth, 1e-5) << "the residual is orthogonal to the factors";
    }
  }
  ModelConfig too_big = tiny("lowrank", 13);  // above min(dim, ...) = 12
  too_big.structured.post_init = "svd";
  EXPECT_THROW(Transformer(too_big, resolve_dims(too_big, too_big.vocab_size)), Error);
}

TEST(LowRank, CountsTheFactorsNotADenseLayer) {
  const ModelConfig dc = tiny("swiglu", 0), lc = tiny("lowrank", 3);
  const ModelDims d = resolve_dims(dc, dc.vocab_size);
  Transformer dense(dc, d), low(lc, resolve_dims(lc, lc.vocab_size));
  const int64_t D = d.dim, H = d.hidden, r = 3;
  const int64_t dense_ffn = 3 * D * H, low_ffn = r * D + 2 * H * r + r * H + D * r;
  EXPECT_EQ(dense.param_counts().total - low.param_counts().total, dense_ffn - low_ffn);
  EXPECT_EQ(dense.param_counts().active_non_embedding - low.param_counts().active_non_embedding, dense_ffn - low_ffn);
  EXPECT_DOUBLE_EQ(dense.flops_per_token(8) - low.flops_per_token(8), 6.0 * (dense_ffn - low_ffn));
  EXPECT_EQ(low.describe_ffn(), "lowrank on layers 1; swiglu on layers 0");
}

// The shipped config of the paper's s model: FFN 3072 wide, rank 384 on layers 1-11.
TEST(LowRank, PaperSmallConfig) {
  const TrainConfig c = parse_config<TrainConfig>({"config=" + std::string(LINGUA_SOURCE_DIR) + "/configs/structured_s_lowrank.yaml"});
  const ModelDims d = resolve_dims(c.model, c.model.vocab_size);
  EXPECT_EQ(d.hidden, 3072);
  Transformer m(c.model, d);
  EXPECT_EQ(m.describe_ffn(), "lowrank on layers 1,2,3,4,5,6,7,8,9,10,11; swiglu on layers 0");
  const ParamStore& s = m.params();
  EXPECT_EQ(s.info(s.index("layers.1.feed_forward.w1.b.weight")).shape, (std::vector<int64_t>{3072, 384}));
}

TEST(LowRank, ConfigErrorsNameTheKey) {
  auto error = [](const ModelConfig& c) {
    try {
      resolve_dims(c, c.vocab_size);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error(tiny("lowrank", 0)).find("model.structured.rank"), std::string::npos);
  ModelConfig c = tiny("lowrank", 2);
  c.structured.layers = std::vector<int>{2};
  EXPECT_NE(error(c).find("model.structured.layers"), std::string::npos);
  EXPECT_EQ(error(tiny("swiglu", 0)), "") << "the keys matter only for ffn=lowrank";
}

// On the GPU (skipped without one): 40 steps of a tiny LowRank model follow the CPU's loss curve.
TEST(LowRankTrainCuda, LossCurveMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  namespace fs = std::filesystem;
  const fs::path data = test_e2e::make_corpus("lowrank_cuda");
  TrainConfig c = test_e2e::tiny_config(data, test_e2e::temp_dir("lowrank_cuda_cpu"));
  c.model.ffn = "lowrank";
  c.model.structured.rank = 8;
  c.steps = 40;
  c.checkpoint.dump.every = 0;
  c.checkpoint.eval.every = 0;
  const TrainResult cpu = train(c, {nullptr, true});
  c.dump_dir = test_e2e::temp_dir("lowrank_cuda_gpu").string();
  c.device = "cuda";
  const TrainResult gpu = train(c, {nullptr, true});
  ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
  double diff = 0, sum = 0;
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 0.1 * cpu.losses[i]) << "step " << i + 1;
    diff += std::fabs(gpu.losses[i] - cpu.losses[i]);
    sum += cpu.losses[i];
  }
  EXPECT_LT(diff / sum, 0.02);
  EXPECT_LT(gpu.losses.back(), gpu.losses.front() - 0.5);
}
