// Self-guided training of the structured FFN layers (lingua/model/ffn/self_guided.cpp, SPEC §3):
//  - finite-difference gradients of every parameter, guides included, mid-phase, each variant;
//  - each guide starts as its layer's dense form (the model's function does not change), alpha
//    follows the cosine and linear schedules, and at max_step the guides are gone: parameters,
//    gradients, moments and FLOPs back to the unguided model's;
//  - reduce_flop's draws repeat, run a guide about alpha of the time, and skipped guides leave the
//    FLOPs count;
//  - training: fixedstep and fixedflop (the extra steps replay the first steps' data, the LR
//    schedule spans them), resumed inside and after the guided phase and inside the replay, bitwise;
//    checkpoints of both phases load for evaluation and generation;
//  - on a GPU: the CPU's loss curve, and CUDA-graph steps equal eager steps across the drop.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/core/cuda.h"
#include "lingua/exec/executor.h"
#include "lingua/exec/testing.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/transformer.h"
#include "lingua/ops/testing.h"
#include "lingua/optim/schedule.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using lingua::test_util::random_ids;
namespace fs = std::filesystem;

namespace {

// dim 12, hidden 32: 4 blocks divide both. Layer 1 structured, guided for `max_step` steps.
ModelConfig tiny(const std::string& ffn, int64_t max_step = 10) {
  ModelConfig c;
  c.dim = 12;
  c.n_layers = 2;
  c.n_heads = 3;
  c.multiple_of = 4;
  c.vocab_size = 13;
  c.max_seqlen = 16;
  c.seed = 5;
  c.ffn = ffn;
  c.structured.nblocks = 4;
  c.structured.rank = 8;
  c.structured.self_guided.mode = "fixedstep";
  c.structured.self_guided.max_step = max_step;
  return c;
}

int guides(const Transformer& m) {
  int n = 0;
  for (int id : m.params().ids()) n += m.params().info(id).name.find(".guide.weight") != std::string::npos;
  return n;
}

std::vector<float> logits(Transformer& m, int T = 7) {
  Executor ex(m);
  const auto tok = random_ids(T, m.dims().vocab, 9);
  std::vector<float> out((size_t)T * m.dims().vocab);
  ex.forward_logits(tok.data(), T, out.data());
  return out;
}

}  // namespace

TEST(SelfGuided, GradientsMatchFiniteDifferences) {
  for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    ModelConfig cfg = tiny(ffn);
    ModelDims d = resolve_dims(cfg, cfg.vocab_size);
    Transformer m(cfg, d);
    m.begin_step(4);  // alpha = cos^2(0.2 pi) ~ 0.65: both branches carry gradient
    // Move the guides off the factors' product, so that the two branches differ.
    for (int id : m.params().ids())
      if (m.params().info(id).name.find(".guide.weight") != std::string::npos) {
        std::vector<float> w = m.params().host_param(id);
        const auto noise = test_util::random_vector(w.size(), (uint32_t)id + 1);
        for (size_t i = 0; i < w.size(); ++i) w[i] += 0.05f * noise[i];
        m.params().set_param(id, w.data());
      }
    ASSERT_EQ(guides(m), 2);
    Executor ex(m);
    const int B = 2, T = 5;
    auto tok = random_ids(B * T, d.vocab, 1), tgt = random_ids(B * T, d.vocab, 2);
    const float scale = 0.1f;
    m.params().zero_grads();
    ex.forward_backward(tok.data(), tgt.data(), B, T, scale);
    const std::vector<float> grad = m.params().host_grads();
    std::mt19937 g(3);
    for (int id : m.params().ids()) {
      const ParamInfo& p = m.params().info(id);
      for (int k = 0; k < 6; ++k) {
        const int64_t e = (int64_t)(g() % p.numel), i = p.grad_offset + e;
        const double fd = test_util::finite_difference(ex, id, e, tok, tgt, B, T, scale);
        EXPECT_NEAR(grad[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << p.name << " entry " << e;
      }
    }
  }
}

// A guide starts as its layer's dense form: at any alpha the model computes what the unguided one
// does (to rounding), and dense_swiglu() mixes guide and factors with the step's alpha.
TEST(SelfGuided, GuidesStartAsTheFactorsProduct) {
  for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    ModelConfig gc = tiny(ffn), pc = gc;
    pc.structured.self_guided.mode = "none";
    Transformer guided(gc, resolve_dims(gc, gc.vocab_size)), plain(pc, resolve_dims(pc, pc.vocab_size));
    const std::vector<float> want = logits(plain);
    for (int64_t step : {0, 3, 9}) {
      guided.begin_step(step);
      const std::vector<float> got = logits(guided);
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << step;
      const DenseSwiGLU a = *guided.block(1).ffn()->dense_swiglu(), b = *plain.block(1).ffn()->dense_swiglu();
      for (size_t i = 0; i < a.w2.size(); ++i) ASSERT_NEAR(a.w2[i], b.w2[i], 1e-6);
    }
    const int id = guided.params().index("layers.1.feed_forward.w2.guide.weight");
    EXPECT_EQ(guided.params().info(id).shape, (std::vector<int64_t>{12, 32}));
    EXPECT_EQ(guided.params().info(guided.params().index("layers.1.feed_forward.w13.guide.weight")).shape,
              (std::vector<int64_t>{64, 12}));
  }
}

TEST(SelfGuided, AlphaFollowsTheScheduleAndTheGuidesGoAtMaxStep) {
  for (const char* sched : {"cosine", "linear"}) {
    ModelConfig gc = tiny("lowrank", 8), pc = gc;
    gc.structured.self_guided.scheduler = sched;
    pc.structured.self_guided.mode = "none";
    Transformer m(gc, resolve_dims(gc, gc.vocab_size)), plain(pc, resolve_dims(pc, pc.vocab_size));
    OptimConfig oc;
    auto opt = make_optimizer(m, oc);
    for (int64_t s = 0; s < 8; ++s) {
      m.begin_step(s);
      const double t = s / 8.0, want = std::string(sched) == "linear" ? 1 - t : 0.5 * (1 + std::cos(M_PI * t));
      EXPECT_NEAR(m.step_metrics().at("self_guided/alpha"), want, 1e-12) << sched << " step " << s;
      EXPECT_EQ(m.step_metrics().at("self_guided/guides_run"), 2);
      EXPECT_EQ(guides(m), 2);
    }
    EXPECT_GT(m.flops_per_token(16), plain.flops_per_token(16));
    EXPECT_GT(m.params().total(), plain.params().total());
    m.begin_step(8);
    EXPECT_EQ(guides(m), 0);
    EXPECT_EQ(m.step_metrics().at("self_guided/alpha"), 0);
    // Weights, gradients and moments are the unguided model's size again; so are the FLOPs.
    EXPECT_EQ(m.params().total(), plain.params().total());
    EXPECT_EQ(m.params().grad_total(), plain.params().grad_total());
    auto plain_opt = make_optimizer(plain, oc);
    int64_t moments = 0, plain_moments = 0;
    for (int id : m.params().ids()) moments += (int64_t)opt->host_v(id).size();
    for (int id : plain.params().ids()) plain_moments += (int64_t)plain_opt->host_v(id).size();
    EXPECT_EQ(moments, plain_moments);
    EXPECT_EQ(m.flops_per_token(16), plain.flops_per_token(16));
    EXPECT_EQ(logits(m), logits(plain)) << "without guides the layer is its factors again";
  }
}

TEST(SelfGuided, ReduceFlopDrawsRepeatAndFollowAlpha) {
  ModelConfig gc = tiny("blockdense", 400);
  gc.structured.self_guided.reduce_flop = true;
  gc.structured.self_guided.scheduler = "linear";
  gc.n_layers = 3;
  Transformer a(gc, resolve_dims(gc, gc.vocab_size)), b(gc, resolve_dims(gc, gc.vocab_size));
  ModelConfig pc = gc;
  pc.structured.self_guided.mode = "none";
  Transformer plain(pc, resolve_dims(pc, pc.vocab_size));
  // Guides w13 [64, 12] and w2 [12, 32] in each of the 2 structured layers.
  auto possible = [](double guide_flops, double ran) {
    for (int a = 0; a <= 2; ++a)
      for (int b = 0; b <= 2; ++b)
        if (a + b == ran && guide_flops == 6.0 * (a * 64 * 12 + b * 12 * 32)) return true;
    return false;
  };
  double runs = 0, expected = 0;
  int none_run = 0;
  for (int64_t s = 0; s < 400; ++s) {
    a.begin_step(s);
    b.begin_step(399 - s);  // (any order: a draw depends on the step only)
    const double ran = a.step_metrics().at("self_guided/guides_run");
    runs += ran;
    expected += 4 * (1 - s / 400.0);
    // Skipped guides leave the FLOPs: 6 per multiplied parameter per token.
    EXPECT_TRUE(possible(a.flops_per_token(16) - plain.flops_per_token(16), ran)) << s;
    if (ran == 0) ++none_run;
    EXPECT_TRUE(a.work_varies_per_step());
  }
  EXPECT_NEAR(runs / expected, 1.0, 0.1);
  EXPECT_GT(none_run, 10);
  for (int64_t s = 0; s < 400; s += 37) {
    a.begin_step(s);
    b.begin_step(s);
    EXPECT_EQ(a.step_metrics(), b.step_metrics()) << s;
  }
  a.begin_step(400);
  EXPECT_FALSE(a.work_varies_per_step());
}

TEST(SelfGuided, ConfigErrorsNameTheKey) {
  ModelConfig c = tiny("lowrank");
  c.ffn = "swiglu";
  EXPECT_NE(test_e2e::error_of([&] { check_ffn_config(c); }).find("model.structured.self_guided.mode"),
            std::string::npos);
  c = tiny("lowrank", 0);
  EXPECT_NE(test_e2e::error_of([&] { check_ffn_config(c); }).find("model.structured.self_guided.max_step"),
            std::string::npos);
  c = tiny("blockshuffle");
  c.structured.self_guided.max_step_ratio = 1.5;
  EXPECT_NE(test_e2e::error_of([&] { check_ffn_config(c); }).find("max_step_ratio"), std::string::npos);
}

namespace {

TrainConfig guided_config(const std::string& ffn, const std::string& mode, const std::string& tag) {
  const fs::path data = test_e2e::make_corpus(tag);
  TrainConfig c = test_e2e::tiny_config(data, test_e2e::temp_dir(tag + "_run"));
  c.steps = 12;
  c.model.ffn = ffn;
  c.model.structured.nblocks = 4;
  c.model.structured.rank = 16;
  c.model.structured.self_guided.mode = mode;
  c.model.structured.self_guided.max_step = 5;
  c.checkpoint.dump.every = 3;
  c.checkpoint.eval.every = 0;
  c.logging.freq = 1;
  return c;
}

std::vector<std::string> tensor_names(const std::string& dir) {
  return SafetensorsFile::open(dir + "/consolidated.safetensors").names();
}

bool has_guide(const std::vector<std::string>& names) {
  for (const std::string& n : names)
    if (n.find(".guide.weight") != std::string::npos) return true;
  return false;
}

}  // namespace

// Stopped inside the guided phase, right after it and in the replay, a run resumes to the
// uninterrupted one's losses and weights, bit for bit; checkpoints hold guides only while the phase
// runs; the FLOPs logged drop when the guides go.
TEST(SelfGuidedTrain, ResumeAnywhereIsBitExact) {
  struct Case {
    const char* ffn;
    const char* mode;
    bool reduce;
    std::vector<int64_t> stops;
  };
  for (const Case& k : {Case{"lowrank", "fixedstep", false, {3, 5, 9}}, Case{"blockshuffle", "fixedflop", true, {2, 6, 13}},
                        Case{"blockdense", "fixedflop", false, {4, 12}}}) {
    SCOPED_TRACE(std::string(k.ffn) + " " + k.mode);
    TrainConfig c = guided_config(k.ffn, k.mode, std::string("sg_") + k.ffn + k.mode);
    c.model.structured.self_guided.reduce_flop = k.reduce;
    std::vector<float> trained;
    TrainHooks hooks;
    hooks.quiet = true;
    hooks.at_end = [&](Executor& ex) { trained = ex.model().params().host_values(); };
    const TrainResult straight = train(c, hooks);
    const size_t total = std::string(k.mode) == "fixedflop" ? 17 : 12;
    ASSERT_EQ(straight.losses.size(), total);
    const std::string root = (fs::path(c.dump_dir) / "checkpoints").string();
    for (const CheckpointEntry& e : list_checkpoints(root))
      EXPECT_EQ(has_guide(tensor_names(e.path)), e.step <= 5) << e.path;
    auto metrics = test_e2e::read_jsonl(fs::path(c.dump_dir) / "metrics.jsonl");
    ASSERT_EQ(metrics.size(), total);
    EXPECT_DOUBLE_EQ(metrics[0]["self_guided/alpha"].get<double>(), 1.0);
    EXPECT_DOUBLE_EQ(metrics[5]["self_guided/alpha"].get<double>(), 0.0);
    const double flops_guided = metrics[1]["speed/FLOPS"].get<double>() / metrics[1]["speed/wps"].get<double>();
    const double flops_after = metrics[7]["speed/FLOPS"].get<double>() / metrics[7]["speed/wps"].get<double>();
    if (!k.reduce) EXPECT_GT(flops_guided, flops_after * 1.01);
    EXPECT_NEAR(metrics.back()["optim/lr"].get<double>(), c.optim.lr * lr_multiplier(c.optim, total - 1, total),
                1e-12);

    for (int64_t stop : k.stops) {
      SCOPED_TRACE(stop);
      TrainConfig s = c;
      s.dump_dir = test_e2e::temp_dir(std::string("sg_split_") + k.ffn + k.mode + std::to_string(stop)).string();
      s.checkpoint.dump.every = stop;  // a checkpoint where the first part stops
      const TrainResult first = train(s, {[stop](int64_t st) { return st < stop; }, true});
      std::vector<float> resumed;
      TrainHooks h2;
      h2.quiet = true;
      h2.at_end = [&](Executor& ex) { resumed = ex.model().params().host_values(); };
      const TrainResult second = train(s, h2);
      EXPECT_EQ(second.start_step, stop);
      std::vector<double> joined = first.losses;
      joined.insert(joined.end(), second.losses.begin(), second.losses.end());
      EXPECT_EQ(joined, straight.losses);
      EXPECT_EQ(resumed, trained);
    }
  }
}

// fixedflop: the extra steps read the first steps' batches again. With a learning rate too small
// to move the weights, the replayed steps' losses are the first steps' (guided then, plain now: the
// same function at init), and not those of the batches after them.
TEST(SelfGuidedTrain, FixedFlopReplaysTheFirstBatches) {
  TrainConfig c = guided_config("lowrank", "fixedflop", "sg_replay");
  c.optim.lr = 1e-12;
  c.optim.warmup = 0;
  c.checkpoint.dump.every = 0;
  c.data.load_async = false;
  const TrainResult r = train(c, {nullptr, true});
  ASSERT_EQ(r.losses.size(), 17u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(r.losses[12 + i], r.losses[i], 1e-5) << i;
    EXPECT_GT(std::fabs(r.losses[12 + i] - r.losses[5 + i]), 1e-4) << i;
  }
}

// Checkpoints of both phases serve evaluation and generation: the loaded model computes what the
// trainer's model did at that step (guides mixed with that step's alpha while they exist).
TEST(SelfGuidedTrain, CheckpointsOfBothPhasesLoadForInference) {
  TrainConfig c = guided_config("blockdense", "fixedstep", "sg_infer");
  c.steps = 8;
  const std::vector<int32_t> prompt = {1, 't', 'h', 'e', ' ', 'w'};
  const int T = (int)prompt.size();
  std::map<int64_t, std::vector<float>> at_step;
  Executor* live = nullptr;
  TrainHooks hooks;
  hooks.quiet = true;
  hooks.at_start = [&](Executor& ex) { live = &ex; };
  hooks.after_step = [&](int64_t step) {
    if (step == 3 || step == 6) {
      std::vector<float>& v = at_step[step];
      v.resize((size_t)T * live->model().dims().vocab);
      live->forward_logits(prompt.data(), T, v.data());
    }
    return true;
  };
  train(c, hooks);
  const std::string root = (fs::path(c.dump_dir) / "checkpoints").string();
  for (int64_t step : {3, 6}) {
    SCOPED_TRACE(step);
    LoadedModel m = load_model(root + "/" + checkpoint_dir_name(step));
    EXPECT_EQ(guides(*m.model), step < 5 ? 2 : 0);
    std::vector<float> got(at_step[step].size());
    m.exec->forward_logits(prompt.data(), T, got.data());
    EXPECT_EQ(got, at_step[step]);
  }
}

// On the GPU (skipped without one): guided training follows the CPU's loss curve, with and without
// reduce_flop; CUDA-graph steps equal eager ones across the guides' drop (a new capture after it).
TEST(SelfGuidedTrainCuda, LossCurveMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (bool reduce : {false, true}) {
    SCOPED_TRACE(reduce);
    TrainConfig c = guided_config("lowrank", "fixedflop", std::string("sg_cuda_") + (reduce ? "r" : "f"));
    c.model.structured.self_guided.reduce_flop = reduce;
    c.steps = 30;
    c.model.structured.self_guided.max_step = 12;
    c.checkpoint.dump.every = 0;
    const TrainResult cpu = train(c, {nullptr, true});
    c.dump_dir = test_e2e::temp_dir(std::string("sg_cuda_gpu_") + (reduce ? "r" : "f")).string();
    c.device = "cuda";
    const TrainResult gpu = train(c, {nullptr, true});
    test_e2e::expect_loss_curves_close(cpu.losses, gpu.losses);
  }
}

TEST(SelfGuidedTrainCuda, GraphStepsEqualEagerStepsAcrossTheDrop) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (const char* ffn : {"lowrank", "blockshuffle"}) {
    SCOPED_TRACE(ffn);
    ModelConfig mc = test_e2e::graph_test_model(3);
    mc.ffn = ffn;
    mc.structured.nblocks = 4;
    mc.structured.rank = 32;
    mc.structured.self_guided.mode = "fixedstep";
    mc.structured.self_guided.max_step = 4;
    const OptimConfig oc = test_e2e::graph_test_optim();
    const std::vector<int32_t> ids = test_e2e::graph_test_ids();
    auto begin = [](int step, Executor& ex) { ex.model().begin_step(step); };
    test_e2e::StepsRun eager = test_e2e::run_steps_on_gpu(mc, oc, ids, false, 9, 6, {}, begin);
    test_e2e::StepsRun graph = test_e2e::run_steps_on_gpu(mc, oc, ids, true, 9, 6, {}, begin);
    EXPECT_TRUE(graph.graph_in_use);
    EXPECT_GE(graph.captures, 2) << "captured again after the guides went";
    EXPECT_EQ(eager.losses, graph.losses);
    EXPECT_EQ(eager.weights, graph.weights);
    EXPECT_EQ(eager.moments, graph.moments);
  }
}
