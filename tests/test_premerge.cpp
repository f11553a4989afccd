// Pre-merge decoding and dense export of the structured FFNs (StructuredFfn::merge,
// lingua/ops/transpose, apps/export_dense.cpp):
//  - a forward of at most model.structured.premerge_max_tokens rows that keeps nothing for
//    backward multiplies by the merged weights, and its logits (full forward and KV-cache decoding)
//    are the factors' logits, for every variant, with and without a guide mid-phase;
//  - the merged weights are dense_swiglu's, made once and made again only when the weights (an
//    optimizer step, a direct edit) or the step (a guide's alpha) change;
//  - `lingua export-dense` writes a dense SwiGLU checkpoint whose logits are the structured
//    model's, leaves the original untouched and refuses what it cannot do;
//  - on a GPU: merged decoding follows the factored one within bf16 rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/exec/executor.h"
#include "lingua/exec/testing.h"
#include "lingua/model/ffn/structured.h"
#include "lingua/model/transformer.h"
#include "lingua/optim/optimizer.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using lingua::test_util::random_ids;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny(const std::string& ffn, int premerge, bool guided = false) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = 3;
  c.n_heads = 3;
  c.multiple_of = 4;
  c.vocab_size = 13;
  c.max_seqlen = 16;
  c.seed = 5;
  c.ffn = ffn;
  c.structured.nblocks = 4;
  c.structured.rank = 8;
  c.structured.premerge_max_tokens = premerge;
  if (guided) {
    c.structured.self_guided.mode = "fixedstep";
    c.structured.self_guided.max_step = 10;
  }
  return c;
}

std::vector<StructuredFfn*> structured_ffns(Transformer& m) {
  std::vector<StructuredFfn*> v;
  for (int l = 0; l < m.n_layers(); ++l)
    if (auto* s = dynamic_cast<StructuredFfn*>(m.block(l).ffn())) v.push_back(s);
  return v;
}

int merges(Transformer& m) {
  int n = 0;
  for (StructuredFfn* s : structured_ffns(m)) n += s->merges();
  return n;
}

// Last-token logits of KV-cache decoding: a prefill of 2 tokens, then one token at a time ([T-1, V]
// for positions 1..T-1).
std::vector<float> decode_logits(Executor& ex, const std::vector<int32_t>& tok) {
  const int T = (int)tok.size(), V = ex.model().dims().vocab;
  KVCache cache = ex.make_cache(T);
  std::vector<float> out((size_t)(T - 1) * V);
  ex.forward_decode(tok.data(), 2, cache, out.data());
  for (int t = 2; t < T; ++t) ex.forward_decode(tok.data() + t, 1, cache, out.data() + (size_t)(t - 1) * V);
  return out;
}

std::vector<float> full_logits(Executor& ex, const std::vector<int32_t>& tok) {
  std::vector<float> out(tok.size() * (size_t)ex.model().dims().vocab);
  ex.forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

// Positions 1..T-1 of full-forward logits, as decode_logits lays them out.
std::vector<float> from_position_1(const std::vector<float>& full, int V) {
  return std::vector<float>(full.begin() + V, full.end());
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << " entry " << i;
}

}  // namespace

TEST(Premerge, MergedForwardsEqualTheFactors) {
  for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"})
    for (bool guided : {false, true}) {
      const std::string what = std::string(ffn) + (guided ? " guided" : "");
      SCOPED_TRACE(what);
      const ModelConfig fc = tiny(ffn, 0, guided), mc = tiny(ffn, 64, guided);
      Transformer factored(fc, resolve_dims(fc, fc.vocab_size)), merged(mc, resolve_dims(mc, mc.vocab_size));
      test_e2e::make_ffns_matter(factored, fc);
      test_e2e::make_ffns_matter(merged, mc);
      ASSERT_EQ(factored.params().host_values(), merged.params().host_values());
      if (guided) {  // mid-phase: both the guide and the factors count
        factored.begin_step(4);
        merged.begin_step(4);
      }
      Executor fe(factored), me(merged);
      const auto tok = random_ids(9, fc.vocab_size, 3);
      const std::vector<float> want = full_logits(fe, tok);
      EXPECT_EQ(merges(factored), 0);
      EXPECT_EQ(merges(merged), 0) << "made on first use, not at construction";
      expect_close(full_logits(me, tok), want, 1e-5, "full forward");
      EXPECT_EQ(merges(merged), 2) << "one merge per structured layer (layers 1 and 2)";
      expect_close(decode_logits(me, tok), from_position_1(want, fc.vocab_size), 1e-5, "decode");
      expect_close(decode_logits(fe, tok), from_position_1(want, fc.vocab_size), 1e-5, "factored decode");
      EXPECT_EQ(merges(merged), 2) << "nothing changed: the merged weights are kept";
      EXPECT_EQ(merges(factored), 0) << "premerge_max_tokens 0: never merged";
      // The merged weights are the layer's dense form.
      for (StructuredFfn* s : structured_ffns(merged)) {
        const DenseSwiGLU d = *s->dense_swiglu();
        std::vector<float> w13 = d.w1;
        w13.insert(w13.end(), d.w3.begin(), d.w3.end());
        const Tensor a = s->merged_w13(), b = s->merged_w2();
        ASSERT_EQ(a.ndim, 2);
        ASSERT_EQ(a.size(0), (int64_t)w13.size() / mc.dim);
        ASSERT_EQ(a.size(1), mc.dim);
        ASSERT_EQ(b.numel(), (int64_t)d.w2.size());
        EXPECT_EQ(std::vector<float>(a.f32(), a.f32() + a.numel()), w13);
        EXPECT_EQ(std::vector<float>(b.f32(), b.f32() + b.numel()), d.w2);
      }
    }
}

// Only forwards of at most premerge_max_tokens rows use them; a training forward never does.
TEST(Premerge, OnlyShortForwardsWithoutBackwardMerge) {
  const ModelConfig c = tiny("lowrank", 4);
  Transformer m(c, resolve_dims(c, c.vocab_size));
  test_e2e::make_ffns_matter(m, c);
  Executor ex(m);
  const auto tok = random_ids(9, c.vocab_size, 3), tgt = random_ids(9, c.vocab_size, 4);
  const std::vector<float> full = full_logits(ex, tok);  // 9 rows > 4: factors
  EXPECT_EQ(merges(m), 0);
  m.params().zero_grads();
  ex.forward_backward(tok.data(), tgt.data(), 1, 4, 1.0f);  // 4 rows, but saving for backward
  EXPECT_EQ(merges(m), 0);
  // Decoding (2 then 1 row at a time) merges, and its logits are the factors' full forward.
  expect_close(decode_logits(ex, tok), from_position_1(full, c.vocab_size), 1e-5, "decode");
  EXPECT_EQ(merges(m), 2);

  // auto (-1, the default): on the CPU the factors are faster (fewer FLOPs), so nothing merges.
  const ModelConfig a = tiny("lowrank", -1);
  EXPECT_EQ(ModelConfig{}.structured.premerge_max_tokens, -1);
  Transformer am(a, resolve_dims(a, a.vocab_size));
  Executor ae(am);
  decode_logits(ae, tok);
  EXPECT_EQ(merges(am), 0);
}

// The merged weights follow the parameters: an optimizer step, a direct edit through the store and
// a guide's next alpha each make them again, and decoding stays the factors' full forward.
TEST(Premerge, MergedWeightsFollowUpdatesAndAlpha) {
  for (bool guided : {false, true}) {
    SCOPED_TRACE(guided ? "guided" : "plain");
    const ModelConfig c = tiny("blockshuffle", 4, guided);
    Transformer m(c, resolve_dims(c, c.vocab_size));
    test_e2e::make_ffns_matter(m, c);
    if (guided) m.begin_step(2);
    Executor ex(m);
    const auto tok = random_ids(9, c.vocab_size, 5), tgt = random_ids(9, c.vocab_size, 6);
    auto check = [&](int want_merges, const char* what) {
      const std::vector<float> full = full_logits(ex, tok);  // 9 rows: the factors
      expect_close(decode_logits(ex, tok), from_position_1(full, c.vocab_size), 1e-5, what);
      EXPECT_EQ(merges(m), want_merges) << what;
      return full;
    };
    const std::vector<float> before = check(2, "initial");

    OptimConfig oc;
    oc.lr = 1e-2;
    oc.warmup = 0;
    AdamW opt(m.params(), oc);
    m.params().zero_grads();
    ex.forward_backward(tok.data(), tgt.data(), 1, 9, 1.0f);
    opt.step(1.0);
    const std::vector<float> stepped = check(4, "after an optimizer step");
    EXPECT_NE(stepped, before);

    const int id = m.params().index("layers.2.feed_forward.w2.blocks2.weight");
    std::vector<float> w = m.params().host_param(id);
    for (float& x : w) x *= -1.5f;
    m.params().set_param(id, w.data());
    EXPECT_NE(check(6, "after set_param"), stepped);

    if (guided) {
      m.begin_step(7);  // alpha moves: the merged product mixes guide and factors differently
      check(8, "after begin_step");
      m.begin_step(12);  // after the phase: the guides are gone, the factors alone
      check(10, "after the guided phase");
    }
  }
}

namespace {


TrainConfig run_config(const std::string& ffn, const std::string& tag) {
  const fs::path data = test_e2e::make_corpus(tag);
  TrainConfig c = test_e2e::tiny_config(data, test_e2e::temp_dir(tag + "_run"));
  c.steps = 6;
  c.model.ffn = ffn;
  c.model.structured.nblocks = 4;
  c.model.structured.rank = 16;
  c.checkpoint.dump.every = 6;
  c.checkpoint.eval.every = 0;
  return c;
}

}  // namespace

// `lingua export-dense` on a checkpoint taken mid-way through self-guided training (a guide
// mixed in with that step's alpha) and after plain training: the dense model's logits are the
// structured model's; the original is untouched; errors name the problem.
TEST(ExportDenseCli, WritesADenseCheckpointWithTheSameLogits) {
  auto [rc, out] = test_e2e::run_cli("export-dense --help");
  EXPECT_EQ(rc, 0);
  for (auto k : {"ckpt", "out", "tokenizer_path"}) EXPECT_NE(out.find(k), std::string::npos) << k << "\n" << out;

  for (const char* ffn : {"lowrank", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    TrainConfig c = run_config(ffn, std::string("export_") + ffn);
    if (std::string(ffn) == "lowrank") {
      c.model.structured.self_guided.mode = "fixedstep";
      c.model.structured.self_guided.max_step = 10;  // still guided at step 6
    }
    TrainHooks quiet;
    quiet.quiet = true;
    train(c, quiet);
    const auto original = test_e2e::snapshot(c.dump_dir);
    const fs::path dense_root = test_e2e::temp_dir(std::string("export_out_") + ffn);
    std::tie(rc, out) = test_e2e::run_cli("export-dense ckpt=" + c.dump_dir + " out=" + dense_root.string());
    ASSERT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("1 FFN layers merged to dense SwiGLU"), std::string::npos) << out;
    EXPECT_EQ(test_e2e::snapshot(c.dump_dir), original);

    const fs::path step_dir = dense_root / checkpoint_dir_name(6);
    ASSERT_TRUE(is_complete_checkpoint(step_dir.string()));
    std::ifstream rec(step_dir / "export_dense.json");
    const nlohmann::json r = nlohmann::json::parse(rec);
    EXPECT_EQ(r["merged_layers"], nlohmann::json::array({1}));
    EXPECT_EQ(r["source_ffn"], ffn);

    // The structured model (factors only: premerge 0) and the dense one, on the same tokens.
    LoadedModel s = load_model(c.dump_dir, "", "cpu", [](TrainConfig& t) { t.model.structured.premerge_max_tokens = 0; });
    LoadedModel d = load_model(dense_root.string());
    EXPECT_EQ(d.config.model.ffn, "swiglu");
    EXPECT_EQ(d.model->describe_ffn(), "swiglu on layers 0,1");
    EXPECT_GE(d.model->params().find("layers.1.feed_forward.w1.weight"), 0);
    EXPECT_LT(d.model->params().find("layers.1.feed_forward.w13.a.weight"), 0);
    const std::vector<int32_t> tok = {1, 't', 'h', 'e', ' ', 'w', 'h', 'a', 'l', 'e'};
    expect_close(full_logits(*d.exec, tok), full_logits(*s.exec, tok), 1e-4, "dense vs structured");

    // Errors: out inside the original, an existing destination.
    std::tie(rc, out) = test_e2e::run_cli("export-dense ckpt=" + c.dump_dir + " out=" + c.dump_dir + "/checkpoints");
    EXPECT_NE(rc, 0);
    EXPECT_NE(out.find("the original is never modified"), std::string::npos) << out;
    std::tie(rc, out) = test_e2e::run_cli("export-dense ckpt=" + c.dump_dir + " out=" + dense_root.string());
    EXPECT_NE(rc, 0);
    EXPECT_NE(out.find("already exists"), std::string::npos) << out;
    EXPECT_EQ(test_e2e::snapshot(c.dump_dir), original);
  }
  // A model whose FFN looks rows up has no dense form.
  TrainConfig st = run_config("stem", "export_stem");
  st.model.structured = StructuredFfnConfig{};
  TrainHooks quiet;
  quiet.quiet = true;
  train(st, quiet);
  std::tie(rc, out) = test_e2e::run_cli("export-dense ckpt=" + st.dump_dir + " out=" +
                                        test_e2e::temp_dir("export_out_stem").string());
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("has no dense form"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(test_e2e::temp_dir("export_out_stem") / checkpoint_dir_name(6)));
}

// `lingua generate` decodes the same greedy text with and without pre-merge.
TEST(PremergeCli, GenerateWithAndWithoutPremerge) {
  TrainConfig c = run_config("blockdense", "premerge_generate");
  TrainHooks quiet;
  quiet.quiet = true;
  train(c, quiet);
  const std::string args = "generate ckpt=" + c.dump_dir + " prompt='the whale' max_gen_len=8 temperature=0 device=cpu";
  auto [rc0, factored] = test_e2e::run_cli(args + " premerge_max_tokens=0");
  auto [rc1, merged] = test_e2e::run_cli(args + " premerge_max_tokens=32");
  ASSERT_EQ(rc0, 0) << factored;
  ASSERT_EQ(rc1, 0) << merged;
  EXPECT_EQ(factored, merged);
  auto [rc3, automatic] = test_e2e::run_cli(args + " premerge_max_tokens=-1");
  ASSERT_EQ(rc3, 0) << automatic;
  EXPECT_EQ(automatic, factored);
  auto [rc2, bad] = test_e2e::run_cli(args + " premerge_max_tokens=-3");
  EXPECT_NE(rc2, 0);
  EXPECT_NE(bad.find("premerge_max_tokens"), std::string::npos) << bad;
}

// On the GPU (skipped without one): bf16 decoding through the merged weights follows the factored
// decoding, and the merged weights are the dense form rounded to bf16.
TEST(PremergeCuda, MergedDecodingFollowsTheFactors) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"})
    for (bool guided : {false, true}) {
      SCOPED_TRACE(std::string(ffn) + (guided ? " guided" : ""));
      ModelConfig fc = tiny(ffn, 0, guided), mc = tiny(ffn, 64, guided);
      for (ModelConfig* c : {&fc, &mc}) {  // wide enough for tiled kernels, odd where allowed
        c->dim = 96;
        c->n_heads = 4;
        c->multiple_of = 8;
        c->structured.rank = 24;
      }
      Transformer factored(fc, resolve_dims(fc, fc.vocab_size)), merged(mc, resolve_dims(mc, mc.vocab_size));
      test_e2e::make_ffns_matter(factored, fc);
      test_e2e::make_ffns_matter(merged, mc);
      if (guided) {
        factored.begin_step(3);
        merged.begin_step(3);
      }
      factored.to_device(Device::cuda);
      merged.to_device(Device::cuda);
      Executor fe(factored), me(merged);
      const auto tok = random_ids(13, fc.vocab_size, 7);
      const std::vector<float> want = decode_logits(fe, tok), got = decode_logits(me, tok);
      double err = 0, scale = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        err = std::max(err, (double)std::fabs(got[i] - want[i]));
        scale = std::max(scale, (double)std::fabs(want[i]));
      }
      EXPECT_LT(err, 0.03 * scale + 1e-3) << "max |merged - factored| " << err << " of " << scale;
      EXPECT_EQ(merges(merged), 2);
      // auto (-1): dim 96 <= 1024 on CUDA merges too.
      ModelConfig ac = mc;
      ac.structured.premerge_max_tokens = -1;
      Transformer automatic(ac, resolve_dims(ac, ac.vocab_size));
      automatic.to_device(Device::cuda);
      Executor ae(automatic);
      decode_logits(ae, tok);
      EXPECT_EQ(merges(automatic), 2);
      for (StructuredFfn* s : structured_ffns(merged)) {
        const DenseSwiGLU d = *s->dense_swiglu();
        const Tensor w2 = s->merged_w2();
        ASSERT_EQ(w2.dtype, DType::bf16);
        std::vector<uint16_t> h((size_t)w2.numel());
        copy_tensor(Tensor(h.data(), {w2.size(0), w2.size(1)}, DType::bf16, Device::cpu), w2);
        const std::vector<float> got_w2 = from_bf16(h);
        // The merge multiplies the bf16 factors: each product's rounding error is relative to the
        // factors' scale, not to the (possibly cancelled) sum, so the bound is the matrix's scale.
        float w2_scale = 0;
        for (float v : d.w2) w2_scale = std::max(w2_scale, std::fabs(v));
        for (size_t i = 0; i < got_w2.size(); ++i)
          ASSERT_NEAR(got_w2[i], d.w2[i], 1e-2 * w2_scale + 1e-4) << i << " (largest |w2| " << w2_scale << ")";
      }
    }
}
