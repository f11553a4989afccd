// STEM end to end: training (dense and row-sparse AdamW for the tables), the tables' optimizer
// group and its metrics, parameter counts in params.json, checkpoints that generation and
// evaluation load with their tables (the original dropped them), resumption, and the GPU path.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/config/validate.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/core/cuda.h"
#include "lingua/eval/validation.h"
#include "lingua/generate/generate.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/model/ffn/stem_edit.h"
#include "lingua/optim/schedule.h"
#include "lingua/train/train_step.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// The tiny config with 3 layers, STEM on layers 1 and 2, one micro-batch a step.
TrainConfig stem_config(const fs::path& data, const fs::path& dump) {
  TrainConfig c = tiny_config(data, dump);
  c.name = "stem";
  c.steps = 16;
  c.grad_acc_steps = 1;
  c.data.prefetch_size = 2;
  c.model.n_layers = 3;
  c.model.n_kv_heads = std::nullopt;
  c.model.ffn = "stem";
  c.optim.warmup = 2;
  c.checkpoint.dump.every = 8;
  c.checkpoint.eval.every = 8;
  c.logging.freq = 4;
  return c;
}

std::vector<float> host_values(const ParamStore& s, const std::string& name) { return s.host_param(s.index(name)); }

}  // namespace

// The trained model's own logits (training forward) equal those of the model generation and
// evaluation load from the checkpoint, full forward and KV-cache decoding alike; the checkpoint
// holds every table by name; params.json has the counts; the metrics have the tables' norm.
TEST(StemTrain, CheckpointGenerationAndEvalUseTheTables) {
  fs::path data = make_corpus("gen");
  fs::path dump = temp_dir("gen_dump");
  TrainConfig c = stem_config(data, dump);
  c.optim.stem.lr = 1e-3;
  std::vector<int32_t> prompt = {1, 't', 'h', 'e', ' ', 'w'};  // BOS, then bytes
  const int T = (int)prompt.size();
  std::vector<float> trained_logits;
  int V = 0;
  TrainHooks hooks;
  hooks.quiet = true;
  hooks.at_end = [&](Executor& m) {
    V = m.model().dims().vocab;
    trained_logits.resize((size_t)T * V);
    m.forward_logits(prompt.data(), T, trained_logits.data());
  };
  TrainResult r = train(c, hooks);
  ASSERT_EQ(r.final_step, 16);
  ASSERT_EQ(trained_logits.size(), (size_t)T * V);

  const std::string ckpt = list_checkpoints((dump / "checkpoints").string()).back().path;
  SafetensorsFile f = SafetensorsFile::open(ckpt + "/consolidated.safetensors");
  for (int l : {1, 2}) EXPECT_TRUE(f.has(stem_table_name(l))) << stem_table_name(l);
  EXPECT_FALSE(f.has(stem_table_name(0)));
  SafetensorsFile o = SafetensorsFile::open(ckpt + "/optimizer.safetensors");
  EXPECT_TRUE(o.has("exp_avg." + stem_table_name(1)));

  LoadedModel m = load_model(dump.string());
  std::vector<float> logits((size_t)T * V);
  m.exec->forward_logits(prompt.data(), T, logits.data());
  EXPECT_EQ(logits, trained_logits);  // same weights, same code path: bitwise
  KVCache cache = m.exec->make_cache(T);
  std::vector<float> step(V);
  m.exec->forward_decode(prompt.data(), 2, cache, step.data());
  for (int t = 2; t < T; ++t) {
    m.exec->forward_decode(prompt.data() + t, 1, cache, step.data());
    for (int v = 0; v < V; ++v) ASSERT_NEAR(step[v], trained_logits[(size_t)t * V + v], 1e-4) << t << "," << v;
  }
  // Not vacuous: the tables matter (the logits change without them).
  std::vector<float> zeros(host_values(m.model->params(), stem_table_name(1)).size(), 0.0f);
  m.model->params().set_param(m.model->params().index(stem_table_name(1)), zeros.data());
  m.exec->forward_logits(prompt.data(), T, logits.data());
  EXPECT_NE(logits, trained_logits);

  // Validation of the loaded checkpoint equals the trainer's at that step.
  LoadedModel e = load_model(ckpt);
  auto res = evaluate_validation(*e.exec, *e.tokenizer, e.config.data, 0);
  auto evals = read_jsonl(dump / "metrics.eval.jsonl");
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals.back()["global_step"], 16);
  EXPECT_DOUBLE_EQ(res.at("toy").nll_per_token(), evals.back()["toy/nll_per_token"].get<double>());

  // params.json: the config plus the counts; tables are parameters but not active ones.
  auto pj = nlohmann::json::parse(read_text_file(ckpt + "/params.json"));
  ParamCounts pc = m.model->param_counts();
  EXPECT_EQ(pj["param_counts"]["total"], pc.total);
  EXPECT_EQ(pj["param_counts"]["groups"]["stem"], pc.groups.at("stem"));
  EXPECT_EQ(pj["param_counts"]["active_non_embedding"], pc.active_non_embedding);
  EXPECT_EQ(pc.groups.at("stem"), 2LL * 258 * m.model->dims().hidden);
  EXPECT_EQ(pj["model"]["ffn"], "stem");

  // Metrics: the tables' own gradient norm and learning rate.
  auto metrics = read_jsonl(dump / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  for (auto& j : metrics) {
    ASSERT_TRUE(j.contains("optim/stem_grad_norm"));
    EXPECT_GT(j["optim/stem_grad_norm"].get<double>(), 0);
    EXPECT_NE(j["optim/stem_grad_norm"], j["optim/grad_norm"]);
  }
  const auto& last = metrics.back();
  EXPECT_NEAR(last["optim/stem_lr"].get<double>() / last["optim/lr"].get<double>(), 1e-3 / 3e-3, 1e-9);
  EXPECT_LT(r.losses.back(), r.losses.front());
}

// A checkpoint that lacks a table is refused with the tensor's name (the original silently ran
// without the tables).
TEST(StemTrain, MissingTableIsAnError) {
  ModelConfig mc;
  mc.dim = 16;
  mc.n_layers = 2;
  mc.n_heads = 2;
  mc.multiple_of = 16;
  mc.vocab_size = 20;
  mc.max_seqlen = 16;
  Transformer dense(mc, resolve_dims(mc, 20));
  fs::path p = temp_dir("missing") / "dense.safetensors";
  save_params(dense.params(), p.string());
  mc.ffn = "stem";
  Transformer stem(mc, resolve_dims(mc, 20));
  try {
    load_params(stem.params(), p.string());
    FAIL() << "loaded a STEM model from a checkpoint without its tables";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(stem_table_name(1)), std::string::npos) << e.what();
  }
}

// Row-sparse AdamW leaves the rows of tokens never seen exactly at their initial values (dense
// AdamW decays them), trains as well on the rows it sees, and resumes bit-exactly.
TEST(StemTrain, SparseOptimizerTouchesOnlySeenRows) {
  fs::path data = make_corpus("sparse");
  std::map<bool, std::vector<float>> tables;
  std::map<bool, std::vector<double>> losses;
  std::vector<float> init;
  int64_t H = 0;
  for (bool sparse : {false, true}) {
    fs::path dump = temp_dir(sparse ? "sparse_dump" : "dense_dump");
    TrainConfig c = stem_config(data, dump);
    c.optim.stem.sparse = sparse;
    c.optim.stem.weight_decay = 0.5;  // makes the dense decay of unseen rows visible
    TrainHooks hooks;
    hooks.quiet = true;
    hooks.at_end = [&](Executor& m) {
      tables[sparse] = host_values(m.model().params(), stem_table_name(2));
      H = m.model().dims().hidden;
    };
    losses[sparse] = train(c, hooks).losses;
    if (init.empty()) {
      ModelDims d = resolve_dims(c.model, 258);
      Transformer fresh(c.model, d);
      init = host_values(fresh.params(), stem_table_name(2));
    }
  }
  // Row of 'z' (never in the corpus) and of 'e' (everywhere).
  auto row = [&](const std::vector<float>& t, int r) { return std::vector<float>(t.begin() + r * H, t.begin() + (r + 1) * H); };
  EXPECT_EQ(row(tables[true], 'z'), row(init, 'z'));
  EXPECT_NE(row(tables[false], 'z'), row(init, 'z'));
  EXPECT_NE(row(tables[true], 'e'), row(init, 'e'));
  EXPECT_LT(losses[true].back(), losses[true].front() - 0.5);
  // Same first step: nothing was decayed yet, and the seen rows get the same update.
  EXPECT_EQ(losses[true][0], losses[false][0]);
  EXPECT_NEAR(losses[true][1], losses[false][1], 1e-3 * losses[false][1]);

  // Resume: 8 + 8 steps equal 16.
  fs::path split = temp_dir("sparse_split");
  TrainConfig c = stem_config(data, split);
  c.optim.stem.sparse = true;
  c.optim.stem.weight_decay = 0.5;
  TrainHooks stop;
  stop.quiet = true;
  stop.after_step = [](int64_t s) { return s < 8; };
  std::vector<double> joined = train(c, stop).losses;
  TrainHooks rest;
  rest.quiet = true;
  rest.at_end = [&](Executor& m) { EXPECT_EQ(host_values(m.model().params(), stem_table_name(2)), tables[true]); };
  std::vector<double> second = train(c, rest).losses;
  joined.insert(joined.end(), second.begin(), second.end());
  EXPECT_EQ(joined, losses[true]);
}

TEST(StemTrain, SparseWithoutStemIsAnError) {
  fs::path data = make_corpus("nostem");
  TrainConfig c = stem_config(data, temp_dir("nostem_dump"));
  c.model.ffn = "swiglu";
  c.optim.stem.sparse = true;
  try {
    train(c, {nullptr, true});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optim.stem.sparse"), std::string::npos) << e.what();
  }
}

// ---- GPU (skipped without one) ----

// A STEM run on the GPU follows the CPU's loss curve, with the dense and the sparse optimizer.
TEST(StemTrainCuda, LossCurveMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  fs::path data = make_corpus("cuda_curve");
  for (bool sparse : {false, true}) {
    TrainConfig c = stem_config(data, temp_dir("cuda_curve_cpu"));
    c.steps = 60;
    c.checkpoint.dump.every = 0;
    c.checkpoint.eval.every = 0;
    c.optim.stem.sparse = sparse;
    TrainResult cpu = train(c, {nullptr, true});
    c.dump_dir = temp_dir("cuda_curve_gpu").string();
    c.device = "cuda";
    TrainResult gpu = train(c, {nullptr, true});
    ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
    double sum_diff = 0, sum = 0;
    for (size_t i = 0; i < cpu.losses.size(); ++i) {
      EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 0.1 * cpu.losses[i]) << "step " << i + 1 << " sparse " << sparse;
      sum_diff += std::fabs(gpu.losses[i] - cpu.losses[i]);
      sum += cpu.losses[i];
    }
    EXPECT_LT(sum_diff / sum, 0.02) << "sparse " << sparse;
    EXPECT_LT(gpu.losses.back(), gpu.losses.front() - 1.0) << "sparse " << sparse;
  }
}

// Graph-replayed STEM steps equal eager ones bit for bit (tables, moments), dense and sparse, with
// two micro-batches a step (the sparse rows are the union of both).
TEST(StemTrainCuda, GraphStepsEqualEagerSteps) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  ModelConfig mc = graph_test_model(3);
  mc.ffn = "stem";
  for (bool sparse : {false, true}) {
    OptimConfig oc = graph_test_optim();
    oc.stem.sparse = sparse;
    oc.stem.clip = 0.05;  // the tables' own clipping takes effect
    const std::vector<int32_t> ids = graph_test_ids(sparse ? 41 : 97);
    auto check = [&](Transformer& m, AdamW& opt) {
      EXPECT_LE(opt.last_grad_norms().at("stem"), 1e3);
      if (!sparse) return;
      // Rows of ids >= 41 never moved.
      Transformer fresh(mc, resolve_dims(mc, mc.vocab_size));
      const ParamInfo& p = m.params().info(m.params().index(stem_table_name(1)));
      const int64_t H = p.shape[1];
      const std::vector<float> now = m.params().host_values(), init = fresh.params().host_values();
      for (int64_t r = 41; r < 97; ++r)
        for (int64_t h = 0; h < H; ++h)
          ASSERT_EQ(now[p.offset + r * H + h], init[p.offset + r * H + h]) << "row " << r;
    };
    StepsRun eager = run_steps_on_gpu(mc, oc, ids, false, 6, -1, check);
    StepsRun graph = run_steps_on_gpu(mc, oc, ids, true, 6, -1, check);
    EXPECT_TRUE(graph.graph_in_use);
    EXPECT_EQ(eager.losses, graph.losses) << "sparse " << sparse;
    EXPECT_EQ(eager.weights, graph.weights) << "sparse " << sparse;
    EXPECT_EQ(eager.moments, graph.moments) << "sparse " << sparse;
  }
}

// The STEM configs: the demo with STEM on, and the paper's 350M settings with STEM on 1/3, 1/2 and
// all of the layers, whose parameter counts (in their comments) are those of the model they build:
// the count formula below is checked against a narrow model of each config (dim 64, vocab 96: the
// full one would allocate billions of parameters), then evaluated at the config's sizes.
TEST(StemConfigs, ParameterCountsAreTheModels) {
  const std::string dir = std::string(LINGUA_SOURCE_DIR) + "/configs/";
  struct Case {
    const char* name;
    size_t stem_layers;
    int64_t total, active;
  };
  // Blocks (attention 4 d^2, two norms, SwiGLU 3 d h, or 2 d h + a [V, h] table in a STEM layer),
  // embedding and head (2 V d), final norm.
  auto formula = [](const ModelConfig& m, int64_t V, bool tables) {
    const ModelDims d = resolve_dims(m, (int)V);
    const int64_t S = (int64_t)m.stem_layers->size(), D = d.dim, H = d.hidden;
    return d.n_layers * (4 * D * D + 2 * D + 3 * D * H) + 2 * V * D + D + S * ((tables ? V * H : 0) - D * H);
  };
  for (const Case& k : {Case{"stem_350m_third", 8, 1071694848, 350798848}, Case{"stem_350m_half", 12, 1420608512, 339264512},
                        Case{"stem_350m_all", 24, 2467349504, 304661504}}) {
    SCOPED_TRACE(k.name);
    const TrainConfig c = parse_config<TrainConfig>({"config=" + dir + k.name + ".yaml"});
    validate_config(c);
    ASSERT_EQ(c.model.stem_layers->size(), k.stem_layers);
    ASSERT_EQ(c.model.vocab_size, 32000);
    ModelConfig narrow = c.model;
    narrow.dim = 64;
    narrow.vocab_size = 96;
    const ParamCounts n = Transformer(narrow, resolve_dims(narrow, 96)).param_counts();
    EXPECT_EQ(n.total, formula(narrow, 96, true));
    EXPECT_EQ(n.embedding, 96 * 64 + (int64_t)k.stem_layers * 96 * resolve_dims(narrow, 96).hidden);
    EXPECT_EQ(formula(c.model, 32000, true), k.total);
    EXPECT_EQ(formula(c.model, 32000, false), k.active);  // all but the tables
    std::ifstream f(dir + k.name + ".yaml");
    std::stringstream s;
    s << f.rdbuf();
    EXPECT_NE(s.str().find(std::to_string(k.total) + " in total; " + std::to_string(k.active) + " active"),
              std::string::npos);
  }
  const TrainConfig d = parse_config<TrainConfig>({"config=" + dir + "demo_stem.yaml"});
  validate_config(d);
  EXPECT_EQ(d.model.ffn, "stem");
  const Transformer m(d.model, resolve_dims(d.model, 258));
  EXPECT_EQ(stem_layers_of(m), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(resolve_dims(d.model, 258).hidden, 704);
}
