// Model growth inside a run over several processes with the block weights sharded (run by ctest
// under `mpirun -np 2`; every rank runs every test; CPU through MPI):
//  - G_learn (depth, FFN units, heads and model.dim at once) under FSDP (fsdp_type full_shard)
//    learns the same map as under DDP: the weights at the start of the grown phase are DDP's, and
//    the ranks hold the same ones; deterministic, and resumable after the growth to the bit;
//  - and under 4 ranks, HSDP (2 replicas x 2 shards) likewise;
//  - growth.carry_moments under FSDP (and 4 ranks' HSDP) carries DDP's moments;
//  - both refused with STEM tables split over ranks, naming the key.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/dist/fsdp.h"
#include "lingua/dist/world.h"
#include "lingua/exec/executor.h"
#include "lingua/optim/optimizer.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/train_step.h"
#include "lingua/train/trainer.h"
#include "tests/mpi_run_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

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
  expect_resumes_bitwise_after(learn_config(data, "", shard), fsdp, 4, "mpi_grow_fsdp_stop_" + tag);
  host().barrier();
}

TEST(DistributedGrowth, LearnedGrowthUnderFsdpLearnsDdpsMap) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  check_learned_growth_sharded_as_ddp(host().size());
}

// growth.carry_moments under FSDP (G_split of depth, FFN units, heads and model.dim): every rank
// grows the source checkpoint's whole moments and keeps its shards' part. The moments after the
// first grown step (its checkpoint) are DDP's run's, and not a fresh optimizer's; a run stopped
// after the growth resumes to the bit.
void check_carried_moments_sharded_as_ddp(int shard) {
  const std::string tag = "s" + std::to_string(shard) + "w" + std::to_string(host().size());
  const fs::path data = shared_corpus("mpi_grow_carry_" + tag);
  auto config = [&](const std::string& name, int shard, bool carry) {
    TrainConfig c = learn_config(data, shared_dir(name + tag), shard);
    c.growth.op = "split";
    c.growth.carry_moments = carry;
    return c;
  };
  const TrainConfig ddp = config("mpi_grow_carry_ddp_", 0, true), fsdp = config("mpi_grow_carry_fsdp_", shard, true),
                    fresh = config("mpi_grow_carry_fresh_", shard, false);
  const TrainResult rd = train(ddp, {nullptr, true});
  const TrainResult rf = train(fsdp, {nullptr, true});
  train(fresh, {nullptr, true});
  ASSERT_EQ(rf.losses.size(), 6u);
  for (size_t i = 0; i < rd.losses.size(); ++i)
    EXPECT_NEAR(rf.losses[i], rd.losses[i], 1e-5 * std::abs(rd.losses[i])) << "step " << i + 1;
  if (host().rank() == 0) {
    // Each run's moments after step 4 (the grown model's first), whole (the sharded ones gathered).
    auto moments = [](const TrainConfig& c) {
      const std::string ckpt = (fs::path(c.dump_dir) / "checkpoints" / "0000000004").string();
      LoadedModel m = load_model(ckpt);
      std::unique_ptr<AdamW> opt = make_optimizer(*m.model, c.optim);
      load_training_checkpoint(ckpt, *m.model, *opt);
      std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> out;
      for (int id : m.model->params().ids())
        if (m.model->params().trainable(id)) out[m.model->params().info(id).name] = {opt->host_m(id), opt->host_v(id)};
      return out;
    };
    const auto md = moments(ddp), mf = moments(fsdp), m0 = moments(fresh);
    ASSERT_EQ(md.size(), mf.size());
    // (Relative to each tensor's largest entry: the ranks' gradients are summed in another order,
    // which moves an entry near zero by more than its own size allows.)
    double worst = 0, from_fresh = 0;
    std::string worst_name;
    for (auto& [name, mv] : md) {
      const auto& f = mf.at(name);
      const auto& z = m0.at(name);
      ASSERT_EQ(f.first.size(), mv.first.size()) << name;
      double top_m = 1e-30, top_v = 1e-30, dm = 0, dv = 0;
      for (size_t i = 0; i < mv.first.size(); ++i) {
        top_m = std::max(top_m, (double)std::abs(mv.first[i]));
        top_v = std::max(top_v, (double)std::abs(mv.second[i]));
        dm = std::max(dm, (double)std::abs(f.first[i] - mv.first[i]));
        dv = std::max(dv, (double)std::abs(f.second[i] - mv.second[i]));
        from_fresh = std::max(from_fresh, std::abs(z.second[i] - mv.second[i]) / (1e-12 + std::abs(mv.second[i])));
      }
      if (std::max(dm / top_m, dv / top_v) > worst) worst = std::max(dm / top_m, dv / top_v), worst_name = name;
    }
    EXPECT_LT(worst, 1e-4) << "FSDP's carried moments are not DDP's (" << worst_name << ")";
    EXPECT_GT(from_fresh, 0.1) << "the moments were not carried";
  }
  host().barrier();
  expect_resumes_bitwise_after(fsdp, rf, 4, "mpi_grow_carry_stop_" + tag);
  host().barrier();
}

TEST(DistributedGrowth, CarriedMomentsUnderFsdpAreDdps) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  check_carried_moments_sharded_as_ddp(host().size());
}

TEST(DistributedGrowth, FourRanksCarriedMomentsUnderHsdpAreDdps) {
  if (host().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  check_carried_moments_sharded_as_ddp(2);
}

// STEM tables split over groups of P ranks (distributed.stem_parallel_size): G_learn gathers its
// map's gradients of the tables from their column slices, and carried moments are written into
// each rank's columns. The grown model is DDP's (whole tables), the losses DDP's (both to the
// summation order: the tables' gradients are summed by the all-to-all), and a run stopped after
// the growth resumes to the bit.
void check_split_tables_as_ddp(int P) {
  const std::string tag = "p" + std::to_string(P) + "w" + std::to_string(host().size());
  const fs::path data = shared_corpus("mpi_grow_tables_" + tag);
  auto config = [&](const fs::path& dump, int tables) {
    TrainConfig c = learn_config(data, dump, 0);
    c.model.ffn = "stem";
    c.model.stem_layers = std::vector<int>{0, 1, 2, 3};
    c.growth.source.yaml =
        "{n_layers: 2, dim: 16, n_heads: 2, ffn_dim_multiplier: 0.6, norm_eps: 2.0e-5, stem_layers: [0, 1]}";
    c.growth.carry_moments = true;
    c.distributed.stem_parallel_size = tables;
    return c;
  };
  const std::unique_ptr<Communicator> group = host().split(host().rank() / P, host().rank() % P);
  auto run = [&](const TrainConfig& c, Values* start) {
    TrainHooks hooks{nullptr, true};
    hooks.at_start = [&](Executor& exec) {  // (each phase; the grown one last)
      *start = gather_full_values(host(), exec.model().params(), false, group.get());
    };
    return train(c, hooks);
  };
  Values ddp_start, split_start;
  const TrainResult ddp = run(config(shared_dir("mpi_grow_tables_ddp_" + tag), 1), &ddp_start);
  const TrainResult split = run(config(shared_dir("mpi_grow_tables_split_" + tag), P), &split_start);
  ASSERT_EQ(split.losses.size(), 6u);
  ASSERT_EQ(split_start.size(), ddp_start.size());
  ASSERT_EQ(ddp_start.count("layers.3.feed_forward.stem_embedding.weight"), 1u) << "a grown model with tables";
  double worst = 0;
  for (auto& [name, v] : ddp_start) {
    const std::vector<float>& f = split_start.at(name);
    ASSERT_EQ(f.size(), v.size()) << name;
    for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(f[i] - v[i]) / (1e-3 + std::abs(v[i])));
  }
  EXPECT_LT(worst, 5e-4) << "the learned map differs from DDP's";  // (2 ranks: about 1e-4)
  for (size_t i = 0; i < ddp.losses.size(); ++i)
    EXPECT_NEAR(split.losses[i], ddp.losses[i], 1e-5 * std::abs(ddp.losses[i])) << "step " << i + 1;
  expect_resumes_bitwise_after(config("", P), split, 4, "mpi_grow_tables_stop_" + tag);
  host().barrier();
}

TEST(DistributedGrowth, SplitTablesLearnAndCarryMomentsAsDdp) { check_split_tables_as_ddp(host().size()); }

TEST(DistributedGrowth, FourRanksTablesSplitInPairsLearnAndCarryMomentsAsDdp) {
  if (host().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  check_split_tables_as_ddp(2);
}

TEST(DistributedGrowth, FourRanksLearnedGrowthUnderHsdpLearnsDdpsMap) {
  if (host().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  check_learned_growth_sharded_as_ddp(2);
}

}  // namespace
