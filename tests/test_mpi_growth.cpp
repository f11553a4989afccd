// Model growth inside a run over several processes with the block weights sharded (run by ctest
// under `mpirun -np 2`; every rank runs every test; CPU through MPI):
//  - G_learn (depth, FFN units, heads and model.dim at once) under FSDP (fsdp_type full_shard)
//    learns the same map as under DDP: the weights at the start of the grown phase are DDP's, and
//    the ranks hold the same ones; deterministic, and resumable after the growth to the bit;
//  - and under 4 ranks, HSDP (2 replicas x 2 shards) likewise.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "lingua/dist/fsdp.h"
#include "lingua/dist/world.h"
#include "lingua/exec/executor.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

Communicator& host() { return process_world().host(); }

// A directory made by rank 0 and shared by every rank.
fs::path shared_dir(const std::string& name) {
  std::string p = host().rank() == 0 ? temp_dir(name).string() : "";
  return host().broadcast_string(p, 0);
}

fs::path shared_corpus(const std::string& name) {
  std::string p = host().rank() == 0 ? make_corpus(name).string() : "";
  p = host().broadcast_string(p, 0);
  host().barrier();
  return p;
}

using Values = std::map<std::string, std::vector<float>>;

// 2 layers of dim 16 (2 heads of 8, FFN 0.6x) grow by G_learn into 4 layers of dim 32 (4 heads, the
// default FFN) after step 3 of 6; shard: 0 DDP, else fsdp_type full_shard with dp_shard = shard.
TrainConfig learn_config(const fs::path& data, const fs::path& dump, int shard) {
  TrainConfig c = tiny_config(data, dump);
  if (shard > 0) {
    c.distributed.fsdp_type = "full_shard";
    c.distributed.dp_shard = shard;
  }
  c.steps = 6;
  c.grad_acc_steps = 2;
  c.checkpoint.dump.every = 1;
  c.checkpoint.dump.keep = 0;
  c.checkpoint.eval.every = 0;
  c.model.n_layers = 4;
  c.model.n_kv_heads.reset();
  c.model.head_dim = 8;
  c.model.norm_eps = 1e-5f;
  c.growth.step = 3;
  c.growth.op = "learn";
  c.growth.source.yaml = "{n_layers: 2, dim: 16, n_heads: 2, ffn_dim_multiplier: 0.6, norm_eps: 2.0e-5}";
  c.growth.learn_steps = 3;
  c.growth.learn_lr = 0.01;
  c.growth.seed = 4;
  return c;
}

// Runs it; `start` receives every parameter's full values (split ones gathered over `shards`, the
// shard group) when the grown phase starts (after the map is learned), and checks that every rank
// holds the same.
TrainResult run_learn(const TrainConfig& c, Communicator& shards, Values* start) {
  TrainHooks hooks{nullptr, getenv("VERBOSE") == nullptr};
  hooks.at_start = [&](Executor& exec) {  // (each phase; the grown one last)
    *start = gather_full_values(shards, exec.model().params());
  };
  const TrainResult r = train(c, hooks);
  double sum[2] = {0, 0};
  for (auto& [name, v] : *start)
    for (size_t i = 0; i < v.size(); ++i) sum[0] += v[i], sum[1] += v[i] * (double)(i % 89);
  double lo[2] = {sum[0], sum[1]}, hi[2] = {sum[0], sum[1]};
  host().all_reduce(lo, 2, ReduceOp::min);
  host().all_reduce(hi, 2, ReduceOp::max);
  EXPECT_TRUE(lo[0] == hi[0] && lo[1] == hi[1]) << "the ranks' grown weights differ";
  return r;
}

void check_learned_growth_sharded_as_ddp(int shard) {
  const std::string tag = "s" + std::to_string(shard) + "w" + std::to_string(host().size());
  const fs::path data = shared_corpus("mpi_grow_learn_" + tag);
  Values ddp_start, fsdp_start, again_start;
  const std::unique_ptr<Communicator> shards = host().split(host().rank() / shard, host().rank() % shard);
  const TrainResult ddp = run_learn(learn_config(data, shared_dir("mpi_grow_ddp_" + tag), 0), *shards, &ddp_start);
  const TrainResult fsdp = run_learn(learn_config(data, shared_dir("mpi_grow_fsdp_" + tag), shard), *shards, &fsdp_start);
  ASSERT_EQ(fsdp.losses.size(), 6u);
  ASSERT_EQ(fsdp_start.size(), ddp_start.size());
  // The map's gradients are DDP's, gathered: the same map, the same weights (two ranks: the same
  // sums of two gradients, so to the bit; more: to the summation order).
  ASSERT_EQ(ddp_start.at("layers.3.attention.wq.weight").size(), 32u * 32u) << "the grown model's";
  double worst = 0;
  for (auto& [name, v] : ddp_start) {
    const std::vector<float>& f = fsdp_start.at(name);
    ASSERT_EQ(f.size(), v.size()) << name;
    if (host().size() == 2) EXPECT_TRUE(f == v) << name;
    for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(f[i] - v[i]) / (1e-3 + std::abs(v[i])));
  }
  EXPECT_LT(worst, 1e-4);
  for (size_t i = 0; i < ddp.losses.size(); ++i)
    EXPECT_NEAR(fsdp.losses[i], ddp.losses[i], 1e-5 * std::abs(ddp.losses[i])) << "step " << i + 1;
  // Deterministic, and a run stopped after the growth resumes to the bit.
  const TrainResult again = run_learn(learn_config(data, shared_dir("mpi_grow_fsdp2_" + tag), shard), *shards, &again_start);
  EXPECT_EQ(again.losses, fsdp.losses) << "two runs of the same config differ";
  EXPECT_TRUE(again_start == fsdp_start) << "two runs learned different maps";
  const fs::path c = shared_dir("mpi_grow_fsdp_stop_" + tag);
  const TrainResult first = train(learn_config(data, c, shard), {[](int64_t step) { return step < 4; }, true});
  ASSERT_EQ(first.final_step, 4);
  const TrainResult rest = train(learn_config(data, c, shard), {nullptr, true});
  ASSERT_EQ(rest.start_step, 4);
  for (size_t i = 0; i < rest.losses.size(); ++i) EXPECT_EQ(rest.losses[i], fsdp.losses[4 + i]) << "step " << 5 + i;
  host().barrier();
}

TEST(DistributedGrowth, LearnedGrowthUnderFsdpLearnsDdpsMap) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  check_learned_growth_sharded_as_ddp(host().size());
}

// STEM tables split over ranks: refused before any step, naming the key.
TEST(DistributedGrowth, LearnedGrowthWithSplitTablesIsRefused) {
  const fs::path data = shared_corpus("mpi_grow_learn_tables");
  TrainConfig c = learn_config(data, shared_dir("mpi_grow_tables"), 0);
  c.model.ffn = "stem";
  c.model.stem_layers = std::vector<int>{0, 1, 2, 3};
  c.growth.source.yaml = "{n_layers: 2, stem_layers: [0, 1]}";
  c.distributed.stem_parallel_size = host().size();
  try {
    train(c, {nullptr, true});
    ADD_FAILURE() << "G_learn with split tables trained";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("distributed.stem_parallel_size=1"), std::string::npos) << e.what();
  }
  host().barrier();
}

TEST(DistributedGrowth, FourRanksLearnedGrowthUnderHsdpLearnsDdpsMap) {
  if (host().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  check_learned_growth_sharded_as_ddp(2);
}

}  // namespace
