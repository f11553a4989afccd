// Sharded checkpoints (sharded.h) written by 4 simulated ranks in one process: FSDP pieces of the
// block matmul weights over shard groups of 2 (2 replicas), column slices of the STEM tables over
// groups of 2, whole parameters spread over the ranks, and a frozen layer (no moments):
//  - every tensor reads back whole, bitwise the one-process values (weights and moments);
//  - every element is written once (each piece in one file; the files hold no copies);
//  - a missing shard file is an error naming the tensor and the missing piece;
//  - consolidating gives the single-file form, bitwise equal, and removes the shards;
//  - load_training_checkpoint and load_model read the sharded form.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/sharded.h"
#include "lingua/checkpoint/train_checkpoint.h"

namespace fs = std::filesystem;
using namespace lingua;

namespace {

constexpr int kWorld = 4, kGroup = 2;

TrainConfig config() {
  TrainConfig c;
  c.model.dim = 16;
  c.model.n_layers = 3;
  c.model.n_heads = 2;
  c.model.multiple_of = 8;
  c.model.vocab_size = 260;
  c.model.max_seqlen = 16;
  c.model.ffn = "stem";
  c.data.seq_len = 16;
  return c;
}

fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lingua_sharded_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

bool is_frozen(const std::string& name) { return name.rfind("layers.2.", 0) == 0; }

// Moments with values of their own (not the weights'), full-size, by parameter name.
std::vector<float> moment_values(const ParamInfo& p, int which) {
  std::vector<float> v(p.full_numel());
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.001f * (float)((i * 7 + p.name.size() * 13 + which * 5) % 97) + which;
  return v;
}

// The model as rank `rank` of kWorld holds it (rank < 0: one process, everything whole), with its
// moments set from moment_values.
struct RankModel {
  Transformer model;
  AdamW opt;
  RankModel(const TrainConfig& c, int rank)
      : model(c.model, resolve_dims(c.model, 258)), opt((prepare(model, rank), model.params()), c.optim) {
    ParamStore& s = model.params();
    for (int id : s.ids())
      if (s.trainable(id)) {
        const ParamInfo& p = s.info(id);
        opt.set_moments(id, p.held_part(moment_values(p, 0)).data(), p.held_part(moment_values(p, 1)).data());
      }
  }
  static void prepare(Transformer& m, int rank) {
    ParamStore& s = m.params();
    for (int id : s.ids()) {
      const ParamInfo& p = s.info(id);
      if (is_frozen(p.name)) s.set_trainable(id, false);
      if (rank < 0 || p.shape.size() != 2 || p.name.rfind("layers.", 0) != 0) continue;
      s.set_placement(id, p.embedding ? Placement::ColumnSlice(kGroup, rank % kGroup)
                                      : Placement::FlatShard(kGroup, rank % kGroup));
    }
  }
};

std::vector<float> read_whole(const CheckpointTensors& c, const std::string& name) {
  std::vector<float> v(c.shape(name).empty() ? 1 : 0);
  int64_t n = 1;
  for (int64_t d : c.shape(name)) n *= d;
  v.resize(n);
  c.read(name, Tensor(v.data(), {n}));
  return v;
}

// Writes every rank's shard into dir; returns the one-process reference.
void write_all_shards(const fs::path& dir, const TrainConfig& c) {
  for (int r = 0; r < kWorld; ++r) {
    RankModel m(c, r);
    write_checkpoint_shard(dir.string(), m.model.params(), &m.opt, r, kWorld);
  }
}

}  // namespace

TEST(ShardedCheckpoint, EveryTensorReadsBackWholeFromFourRanks) {
  const TrainConfig c = config();
  const fs::path dir = fresh_dir("four");
  write_all_shards(dir, c);
  RankModel one(c, -1);
  const ParamStore& s = one.model.params();
  const CheckpointTensors t = CheckpointTensors::open(dir.string());
  EXPECT_TRUE(t.sharded());
  int split = 0, moments = 0;
  for (int id : s.ids()) {
    const ParamInfo& p = s.info(id);
    ASSERT_TRUE(t.has(p.name)) << p.name;
    EXPECT_EQ(t.shape(p.name), p.shape) << p.name;
    EXPECT_EQ(read_whole(t, p.name), s.host_param(id)) << p.name;
    split += p.shape.size() == 2 && p.name.rfind("layers.", 0) == 0;
    EXPECT_EQ(t.has(CheckpointFiles::moment(0, p.name)), !is_frozen(p.name)) << p.name << ": moments iff trainable";
    if (is_frozen(p.name)) continue;
    ++moments;
    EXPECT_EQ(read_whole(t, CheckpointFiles::moment(0, p.name)), moment_values(p, 0)) << p.name;
    EXPECT_EQ(read_whole(t, CheckpointFiles::moment(1, p.name)), moment_values(p, 1)) << p.name;
  }
  EXPECT_GE(split, 3 * 5);  // wq wk wv wo w2 of each layer, and w1 or a table
  EXPECT_EQ((int)t.names().size(), (int)s.ids().size() + 2 * moments) << "nothing else in the shards";
  // Each piece once: the files' tensors together are as many floats as the pieces need.
  int64_t stored = 0, needed = 0;
  for (int r = 0; r < kWorld; ++r) {
    const SafetensorsFile f = SafetensorsFile::open((dir / checkpoint_shard_name(r)).string());
    EXPECT_FALSE(f.names().empty()) << "rank " << r << " writes a share";
    for (const std::string& n : f.names()) stored += f.info(n).numel();
  }
  for (int id : s.ids()) {
    const ParamInfo& p = s.info(id);
    const bool split_here = p.shape.size() == 2 && p.name.rfind("layers.", 0) == 0 && !p.embedding;
    const int64_t size = split_here ? kGroup * ((p.full_numel() + kGroup - 1) / kGroup) : p.full_numel();
    needed += size * (is_frozen(p.name) ? 1 : 3);
  }
  EXPECT_EQ(stored, needed);
}

TEST(ShardedCheckpoint, AMissingShardIsNamed) {
  const TrainConfig c = config();
  const fs::path dir = fresh_dir("missing");
  write_all_shards(dir, c);
  // A lost shard file is named (the last or one in the middle), and consolidate deletes nothing.
  for (int lost : {3, 1}) {
    fs::rename(dir / checkpoint_shard_name(lost), dir / "elsewhere.safetensors");
    try {
      CheckpointTensors::open(dir.string());
      ADD_FAILURE() << "opened without " << checkpoint_shard_name(lost);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(checkpoint_shard_name(lost) + " is missing"), std::string::npos) << e.what();
    }
    EXPECT_THROW(consolidate_checkpoint(dir.string()), Error);
    EXPECT_TRUE(fs::exists(dir / checkpoint_shard_name(0)));
    fs::rename(dir / "elsewhere.safetensors", dir / checkpoint_shard_name(lost));
  }
  // Pieces missing inside the files (here: rank 3's shard holds nothing) are named with their tensor.
  write_safetensors((dir / checkpoint_shard_name(3)).string(), {}, {{"world", std::to_string(kWorld)}});
  const CheckpointTensors t = CheckpointTensors::open(dir.string());
  int named = 0;
  for (const std::string& name : t.names()) {
    try {
      read_whole(t, name);
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(name), std::string::npos) << m;
      EXPECT_NE(m.find("piece"), std::string::npos) << m;
      ++named;
    }
  }
  EXPECT_GT(named, 0) << "rank 3 wrote pieces that nothing else holds";
}

TEST(ShardedCheckpoint, ConsolidatesToTheSingleFileForm) {
  const TrainConfig c = config();
  const fs::path dir = fresh_dir("consolidate");
  write_all_shards(dir, c);
  const CheckpointTensors before = CheckpointTensors::open(dir.string());
  std::map<std::string, std::vector<float>> values;
  for (const std::string& n : before.names()) values[n] = read_whole(before, n);
  EXPECT_EQ(consolidate_checkpoint(dir.string()), (int)values.size());
  EXPECT_FALSE(fs::exists(dir / checkpoint_shard_name(0)));
  EXPECT_TRUE(fs::exists(dir / CheckpointFiles::weights));
  EXPECT_TRUE(fs::exists(dir / CheckpointFiles::optimizer));
  const CheckpointTensors after = CheckpointTensors::open(dir.string());
  EXPECT_FALSE(after.sharded());
  ASSERT_EQ(after.names().size(), values.size());
  for (const auto& [n, v] : values) EXPECT_EQ(read_whole(after, n), v) << n;
  // The weights file alone holds no moments; consolidating again changes nothing.
  EXPECT_FALSE(SafetensorsFile::open((dir / CheckpointFiles::weights).string()).has("exp_avg.output.weight"));
  EXPECT_EQ(consolidate_checkpoint(dir.string()), 0);
}

TEST(ShardedCheckpoint, TrainingCheckpointAndModelLoadFromShards) {
  TrainConfig c = config();
  const fs::path root = fresh_dir("root");
  const std::string step_dir = save_checkpoint_dir(root.string(), 7, [&](const std::string& tmp) {
    write_all_shards(tmp, c);
    write_text_file_atomic(tmp + "/" + CheckpointFiles::params, params_json(c, RankModel(c, -1).model.param_counts()));
    for (int r = 0; r < kWorld; ++r) {
      TrainState st;
      st.step = 7;
      write_text_file_atomic(tmp + "/" + CheckpointFiles::train_state(r), train_state_json(st));
    }
  });
  EXPECT_TRUE(has_optimizer_state(step_dir));
  // One process, whole parameters; and rank 1 of 4 with its pieces.
  for (int rank : {-1, 1}) {
    SCOPED_TRACE(rank);
    RankModel ref(c, rank);
    TrainConfig other = c;
    other.model.seed = 99;  // different init: everything must come from the checkpoint
    Transformer m(other.model, resolve_dims(other.model, 258));
    RankModel::prepare(m, rank);
    AdamW opt(m.params(), c.optim);
    // (as rank 0 of 4 for the whole model: the loader states here are placeholders, not re-split)
    load_training_checkpoint(step_dir, m, opt, rank < 0 ? 0 : rank, kWorld);
    for (int id : m.params().ids()) {
      EXPECT_EQ(m.params().host_param(id), ref.model.params().host_param(id)) << m.params().info(id).name;
      if (m.params().trainable(id)) EXPECT_EQ(opt.host_m(id), ref.opt.host_m(id)) << m.params().info(id).name;
    }
  }
  LoadedModel lm = load_model(step_dir);
  RankModel ref(c, -1);
  for (int id : lm.model->params().ids())
    EXPECT_EQ(lm.model->params().host_param(id), ref.model.params().host_param(id)) << lm.model->params().info(id).name;
}
