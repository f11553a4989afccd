// The checkpoint layout (train_checkpoint.h): a training checkpoint written and read back (weights,
// moments of the trainable parameters only, train state), its files' names, the weights-only
// checkpoint with extra files, load_model on both, and a checkpoint of N ranks loaded on M (the
// data-loader states re-split).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/data/loader.h"
#include "lingua/data/resplit.h"
#include "lingua/data/testing.h"

namespace fs = std::filesystem;
using namespace lingua;

namespace {

TrainConfig config() {
  TrainConfig c;
  c.model.dim = 16;
  c.model.n_layers = 2;
  c.model.n_heads = 2;
  c.model.multiple_of = 8;
  c.model.vocab_size = 260;  // >= the bytes tokenizer's 258
  c.model.max_seqlen = 16;
  c.data.seq_len = 16;  // a params.json is validated on load: seq_len <= max_seqlen
  return c;
}

fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lingua_ckpt_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  return p;
}

// Layer 1 frozen, as a base model under trained additions would be.
void freeze_layer1(Transformer& m) {
  for (int id : m.params().ids())
    if (m.params().info(id).name.rfind("layers.1.", 0) == 0) m.params().set_trainable(id, false);
}

}  // namespace

TEST(TrainCheckpoint, RoundTripWithFrozenParameters) {
  const TrainConfig cfg = config();
  const ModelDims d = resolve_dims(cfg.model, 258);
  Transformer m(cfg.model, d);
  freeze_layer1(m);
  Executor ex(m);
  AdamW opt(m.params(), cfg.optim);
  std::vector<int32_t> tok = {1, 5, 9, 200, 7, 3}, tgt = {5, 9, 200, 7, 3, 2};
  for (int s = 0; s < 2; ++s) {
    ex.zero_grads();
    ex.forward_backward(tok.data(), tgt.data(), 1, 6, 1.0f / 6);
    opt.step(1.0);
  }
  const fs::path root = fresh_dir("train");
  save_training_checkpoint(root.string(), cfg, m, opt, {7, opt.steps_taken(), {{"loader", 42}}});
  const std::string dir = (root / checkpoint_dir_name(7)).string();
  ASSERT_TRUE(is_complete_checkpoint(dir));
  for (const std::string f : {CheckpointFiles::weights, CheckpointFiles::optimizer, CheckpointFiles::params})
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;
  EXPECT_EQ(CheckpointFiles::train_state(0), "train_state_00000.json");
  EXPECT_TRUE(fs::exists(fs::path(dir) / CheckpointFiles::train_state(0)));
  SafetensorsFile o = SafetensorsFile::open(dir + "/" + CheckpointFiles::optimizer);
  EXPECT_TRUE(o.has("exp_avg.layers.0.attention.wq.weight"));
  EXPECT_TRUE(o.has("exp_avg_sq.layers.0.attention.wq.weight"));
  EXPECT_FALSE(o.has("exp_avg.layers.1.attention.wq.weight"));  // frozen: no moments
  EXPECT_EQ(resolve_checkpoint_dir(root.string()), dir);
  EXPECT_EQ(checkpoint_step(dir), 7);
  // A directory name of digits too long for int64: not a step number (was std::out_of_range).
  fs::path huge = fs::temp_directory_path() / ("lingua_huge_step_" + std::to_string(::getpid())) / "123456789012345678901234";
  fs::create_directories(huge);
  EXPECT_EQ(checkpoint_step(huge.string()), 0);

  // Read back into a model of another seed: weights, moments and counters as saved.
  TrainConfig other = cfg;
  other.model.seed = 99;
  Transformer m2(other.model, d);
  freeze_layer1(m2);
  AdamW opt2(m2.params(), other.optim);
  ASSERT_NE(m2.params().host_values(), m.params().host_values());
  TrainState st = load_training_checkpoint(dir, m2, opt2);
  EXPECT_EQ(st.step, 7);
  EXPECT_EQ(st.optimizer_steps, 2);
  EXPECT_EQ(st.data_loader["loader"], 42);
  EXPECT_EQ(opt2.steps_taken(), 2);
  EXPECT_EQ(m2.params().host_values(), m.params().host_values());
  for (int id : m.params().ids()) {
    if (!m.params().trainable(id)) continue;
    EXPECT_EQ(opt2.host_m(id), opt.host_m(id)) << m.params().info(id).name;
    EXPECT_EQ(opt2.host_v(id), opt.host_v(id)) << m.params().info(id).name;
  }
  // A model that trains layer 1 needs its moments: the missing tensor is named.
  Transformer m3(cfg.model, d);
  AdamW opt3(m3.params(), cfg.optim);
  try {
    load_training_checkpoint(dir, m3, opt3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exp_avg.layers.1."), std::string::npos) << e.what();
  }
}

TEST(TrainCheckpoint, WeightsOnlyCheckpointAndLoadModel) {
  const TrainConfig cfg = config();
  const ModelDims d = resolve_dims(cfg.model, 258);
  Transformer m(cfg.model, d);
  const fs::path root = fresh_dir("weights");
  const std::string dir = save_model_checkpoint(root.string(), 3, cfg, m, {{"note.json", "{\"edited\": true}\n"}});
  EXPECT_EQ(dir, (root / checkpoint_dir_name(3)).string());
  EXPECT_TRUE(fs::exists(fs::path(dir) / "note.json"));
  EXPECT_FALSE(fs::exists(fs::path(dir) / CheckpointFiles::optimizer));
  LoadedModel lm = load_model(root.string());
  EXPECT_EQ(lm.checkpoint_dir, dir);
  ASSERT_TRUE(lm.model && lm.exec && lm.tokenizer);
  EXPECT_EQ(lm.model->params().host_values(), m.params().host_values());
  std::vector<int32_t> tok = {1, 2, 3};
  std::vector<float> a(3 * 260), b(3 * 260);
  lm.exec->forward_logits(tok.data(), 3, a.data());
  Executor ex(m);
  ex.forward_logits(tok.data(), 3, b.data());
  EXPECT_EQ(a, b);
  Transformer m2(cfg.model, d);
  m2.params().set_param(0, std::vector<float>(m2.params().info(0).numel, 0.5f).data());
  load_weights(m2, dir);
  EXPECT_EQ(m2.params().host_values(), m.params().host_values());
  EXPECT_THROW(load_model((root / "nothing").string()), Error);
}

// A corrupt train state is a lingua::Error naming the file and the key (it was a nlohmann exception).
TEST(TrainCheckpoint, BadTrainStateNamesFileAndKey) {
  const TrainConfig cfg = config();
  const ModelDims d = resolve_dims(cfg.model, 258);
  Transformer m(cfg.model, d);
  AdamW opt(m.params(), cfg.optim);
  const fs::path root = fresh_dir("bad_state");
  save_training_checkpoint(root.string(), cfg, m, opt, {3, 3, {{"loader", 1}}});
  const std::string dir = (root / checkpoint_dir_name(3)).string();
  const std::string path = dir + "/" + CheckpointFiles::train_state(0);
  write_text_file_atomic(path, R"({"step": "3", "optimizer_steps": 3, "data_loader": {}})");
  try {
    load_training_checkpoint(dir, m, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'step'"), std::string::npos) << e.what();
  }
}

// A checkpoint of 2 ranks loads on 1 or 3 with the loader states re-split (resplit.h), on 2 as
// saved; states that cannot be re-split fail before the model is touched, and resuming then falls
// back to the newest checkpoint that loads, as for any bad train state.
TEST(TrainCheckpoint, AnotherRankCountLoadsReSplit) {
  test_util::TempDir data;
  for (int c = 0; c < 2; ++c)
    test_util::write_file(data.path / "s" / ("s.chunk." + std::to_string(c) + ".jsonl"),
                          test_util::jsonl_of({"one document", "and another", "and a third one"}));
  DataConfig dc;
  dc.root_dir = data.str();
  dc.sources = {{"s", 1.0}};
  dc.seq_len = 8;
  dc.prefetch_size = 2;
  BytesTokenizer tok;
  std::vector<nlohmann::json> loaders;
  for (int r = 0; r < 2; ++r) {
    DataLoader l(dc, tok, r, 2);
    l.next();
    loaders.push_back(l.state());
  }
  const TrainConfig cfg = config();
  const ModelDims d = resolve_dims(cfg.model, 258);
  Transformer m(cfg.model, d);
  AdamW opt(m.params(), cfg.optim);
  const fs::path root = fresh_dir("resplit");
  save_training_checkpoint(root.string(), cfg, m, opt, std::vector<TrainState>{{4, 4, loaders[0]}, {4, 4, loaders[1]}});
  const std::string dir = (root / checkpoint_dir_name(4)).string();
  for (int world : {1, 3})
    for (int rank = 0; rank < world; ++rank) {
      const TrainState st = load_training_checkpoint(dir, m, opt, rank, world);
      EXPECT_EQ(st.step, 4);
      EXPECT_EQ(st.resplit_from, 2);
      EXPECT_EQ(st.resplit_step, 4);
      EXPECT_EQ(st.data_loader, resplit_loader_states(loaders, world)[rank]);
      DataLoader l(dc, tok, rank, world);
      l.load_state(st.data_loader);
      l.next();
      // The record is written with the train state and read back.
      EXPECT_EQ(parse_train_state(train_state_json(st), "x").resplit_from, 2);
    }
  const TrainState same = load_training_checkpoint(dir, m, opt, 1, 2);
  EXPECT_EQ(same.data_loader, loaders[1]);
  EXPECT_EQ(same.resplit_from, 0);
  EXPECT_EQ(train_state_json(same).find("data_resplit"), std::string::npos);

  // Rank 1's state is not one of the same run: refused, naming the checkpoint, before the weights load.
  save_training_checkpoint(root.string(), cfg, m, opt, std::vector<TrainState>{{5, 5, loaders[0]}, {5, 5, loaders[0]}});
  const std::string bad = (root / checkpoint_dir_name(5)).string();
  Transformer m2(cfg.model, d);
  m2.params().set_param(0, std::vector<float>(m2.params().info(0).numel, 0.5f).data());
  const std::vector<float> before = m2.params().host_values();
  AdamW opt2(m2.params(), cfg.optim);
  const std::string e = test_util::error_of([&] { load_training_checkpoint(bad, m2, opt2, 0, 1); });
  EXPECT_NE(e.find(bad), std::string::npos) << e;
  EXPECT_NE(e.find("re-splitting the data loader states of its 2 ranks over 1"), std::string::npos) << e;
  EXPECT_NE(e.find("saved by rank 0 but it is state 1"), std::string::npos) << e;
  EXPECT_EQ(m2.params().host_values(), before);
  auto resumed = load_latest_training_checkpoint(root.string(), m2, opt2, {}, 0, 1);
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->path, dir);
  ASSERT_EQ(resumed->skipped.size(), 1u);
  EXPECT_EQ(resumed->skipped[0].path, bad);
  EXPECT_EQ(resumed->state.resplit_from, 2);
}
