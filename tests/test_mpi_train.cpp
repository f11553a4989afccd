// `lingua train` over several processes (run by ctest under `mpirun -np 2`; every rank runs every
// test): data-parallel training on the CPU through MPI (and on CUDA through NCCL where GPUs are
// visible), with the checkpoints it writes:
//  - two runs of the same config give bitwise the same losses (determinism at a fixed world size);
//  - a run stopped at a checkpoint and resumed gives bitwise the losses of an uninterrupted run;
//  - the checkpoint holds one train state per rank and weights that one process loads
//    (load_model) equal to every rank's trained weights;
//  - one process loads it with the ranks' data-loader states re-split over one rank (resuming on
//    another count end to end: test_resplit_e2e.cpp);
//  - metrics.jsonl is written once (by rank 0), with the loss over every rank's tokens;
//  - all of it with the block weights sharded (FSDP, distributed.fsdp_type full_shard), whose
//    losses are DDP's (to fp32 summation order) and whose checkpoint holds the full weights;
//  - and under 4 ranks, hybrid sharding (HSDP: dp_shard 2, 2 replicas) likewise;
//  - a STEM model with its tables split by columns over 2 ranks (distributed.stem_parallel_size),
//    with DDP or FSDP beside, trains as DDP with whole tables, likewise (and under 4 ranks, two
//    table groups that are replicas of each other);
//  - a LowRank model with self-guided training across the guides' drop, under DDP and FSDP;
//  - `lingua export-hf` of the sharded checkpoint writes the weights it writes from the consolidated one;
//  - model growth with G_random in width under DDP (its masks act before the reduction), FSDP and HSDP.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/sharded.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/core/cuda.h"
#include "lingua/data/loader.h"
#include "lingua/dist/fsdp.h"
#include "lingua/dist/world.h"
#include "lingua/eval/validation.h"
#include "lingua/train/growth_run.h"
#include "lingua/train/trainer.h"
#include "tests/mpi_run_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// The parallelism: DDP, FSDP over every rank, or HSDP (shard groups of 2); a STEM model with DDP,
// and with its tables split over groups of 2 ranks (with DDP, and with FSDP).
// And a LowRank model with self-guided training (guides dropped at step 4, drawn with reduce_flop)
// under DDP and FSDP.
// And module tokens (two modules, trained with the model) under DDP and FSDP.
// And BlockShuffle and BlockDense FFNs (3-d block factors) under DDP and FSDP.
enum class Mode {
  ddp,
  fsdp,
  hsdp,
  stem_ddp,
  stem_tables,
  stem_tables_fsdp,
  guided_ddp,
  guided_fsdp,
  modules_ddp,
  modules_fsdp,
  blockshuffle_ddp,
  blockshuffle_fsdp,
  blockdense_ddp,
  blockdense_fsdp
};
const char* mode_name(Mode m) {
  const char* names[] = {"ddp",         "fsdp",          "hsdp",           "stem_ddp",          "stem_tables",
                         "stem_tables_fsdp", "guided_ddp", "guided_fsdp",  "modules_ddp",       "modules_fsdp",
                         "blockshuffle_ddp", "blockshuffle_fsdp", "blockdense_ddp", "blockdense_fsdp"};
  return names[(int)m];
}
bool stem(Mode m) { return m == Mode::stem_ddp || m == Mode::stem_tables || m == Mode::stem_tables_fsdp; }
bool tables(Mode m) { return m == Mode::stem_tables || m == Mode::stem_tables_fsdp; }
bool guided(Mode m) { return m == Mode::guided_ddp || m == Mode::guided_fsdp; }
bool modules(Mode m) { return m == Mode::modules_ddp || m == Mode::modules_fsdp; }
bool blockshuffle(Mode m) { return m == Mode::blockshuffle_ddp || m == Mode::blockshuffle_fsdp; }
bool blockdense(Mode m) { return m == Mode::blockdense_ddp || m == Mode::blockdense_fsdp; }

TrainConfig dist_config(const fs::path& data, const fs::path& dump, const std::string& device, Mode mode) {
  TrainConfig c = tiny_config(data, dump);
  if (mode == Mode::fsdp || mode == Mode::hsdp || mode == Mode::stem_tables_fsdp || mode == Mode::guided_fsdp ||
      mode == Mode::modules_fsdp || mode == Mode::blockshuffle_fsdp || mode == Mode::blockdense_fsdp) {
    c.distributed.fsdp_type = "full_shard";
    c.distributed.dp_shard = mode == Mode::hsdp ? 2 : host().size();
  }
  if (stem(mode)) {
    c.model.ffn = "stem";
    c.model.stem_layers = std::vector<int>{0, 1};
  }
  if (tables(mode)) c.distributed.stem_parallel_size = 2;
  if (guided(mode)) {  // layer 1 LowRank with guides for the first 4 of 8 steps
    c.model.ffn = "lowrank";
    c.model.structured.rank = 8;
    c.model.structured.self_guided.mode = "fixedstep";
    c.model.structured.self_guided.scheduler = "linear";
    c.model.structured.self_guided.reduce_flop = true;
    c.model.structured.self_guided.max_step = 4;
  }
  if (blockshuffle(mode) || blockdense(mode)) {  // layer 1 structured, 2 blocks
    c.model.ffn = blockshuffle(mode) ? "blockshuffle" : "blockdense";
    c.model.structured.nblocks = 2;
    if (blockdense(mode)) c.model.structured.rank = 8;
    // BlockShuffle's evaluations (every 4 steps) run pre-merged weights, merged from sharded
    // factors under FSDP.
    if (blockshuffle(mode)) c.model.structured.premerge_max_tokens = 4096;
  }
  if (modules(mode)) {
    c.model.modules = {"m1", "m0"};
    c.model.module_seq_len = 3;
    c.model.module_agg = "mean";
  }
  c.device = device;
  c.steps = 8;
  c.grad_acc_steps = 2;
  c.checkpoint.dump.every = 4;
  c.checkpoint.dump.keep = 0;
  c.checkpoint.eval.every = 4;
  c.logging.freq = 2;
  return c;
}

std::vector<std::string> test_devices() {
  std::vector<std::string> d{"cpu"};
  // NCCL needs one GPU per rank: with fewer, only the CPU runs.
  if (cuda_device_count() >= std::max(1, process_world().env().local_size)) {
    static bool selected = (select_local_gpu(process_world()), true);
    (void)selected;
    d.push_back("cuda");
  }
  return d;
}

using Values = std::map<std::string, std::vector<float>>;

// Losses of runs that differ only in summation order agree to this relative error: 1e-5 on the
// CPU, 1e-2 in bf16 on the GPU.
double loss_tolerance(const std::string& device) { return device == "cpu" ? 1e-5 : 1e-2; }

// The losses of a sharded or split run against DDP's, step by step, to loss_tolerance.
::testing::AssertionResult losses_match(const std::vector<double>& got, const std::vector<double>& ddp,
                                        const std::string& device) {
  if (got.size() != ddp.size())
    return ::testing::AssertionFailure() << got.size() << " losses against DDP's " << ddp.size();
  const double tol = loss_tolerance(device);
  for (size_t i = 0; i < ddp.size(); ++i)
    if (!(std::abs(got[i] - ddp[i]) <= tol * std::abs(ddp[i])))
      return ::testing::AssertionFailure() << "step " << i + 1 << ": " << got[i] << " against DDP's " << ddp[i];
  return ::testing::AssertionSuccess();
}

// Trains the config with DDP, FSDP or HSDP over the ranks; returns the uninterrupted run's losses.
std::vector<double> check_distributed_train(const std::string& device, Mode mode, fs::path* run_dir = nullptr) {
  const int W = host().size();
  const std::string tag = device + "_" + mode_name(mode) + std::to_string(W);
  const fs::path data = shared_corpus("dist_train_" + tag);
  auto config = [&](const fs::path& dump) { return dist_config(data, dump, device, mode); };
  // An uninterrupted run, and the same config again.
  const fs::path a = shared_dir("dist_a_" + tag), b = shared_dir("dist_b_" + tag);
  if (run_dir) *run_dir = a;
  Values trained;
  TrainHooks quiet{nullptr, true};
  // (HSDP's weights are split over a shard group of 2, the tables' columns over groups of 2:
  // gathered over those groups.)
  std::unique_ptr<Communicator> pair = host().split(host().rank() / 2, host().rank() % 2);
  quiet.at_end = [&](Executor& exec) {
    trained = gather_full_values(mode == Mode::hsdp ? *pair : host(), exec.model().params(), false,
                                 tables(mode) ? pair.get() : nullptr);
  };
  const TrainResult ra = train(config(a), quiet);
  EXPECT_EQ(ra.losses.size(), 8u);
  const TrainResult rb = train(config(b), {nullptr, true});
  EXPECT_EQ(rb.losses, ra.losses) << "two runs of the same config differ";
  // The loss is the mean over every rank's tokens: the same number on every rank.
  std::vector<double> mine(ra.losses.begin(), ra.losses.end()), lo = mine, hi = mine;
  host().all_reduce(lo.data(), (int64_t)lo.size(), ReduceOp::min);
  host().all_reduce(hi.data(), (int64_t)hi.size(), ReduceOp::max);
  EXPECT_EQ(lo, hi) << "ranks report different losses";

  // Stopped after the checkpoint of step 4, then resumed: the same losses to the bit.
  const fs::path c = shared_dir("dist_c_" + tag);
  TrainHooks stop{[](int64_t step) { return step < 4; }, true};
  const TrainResult first = train(config(c), stop);
  EXPECT_EQ(first.final_step, 4);
  const TrainResult rest = train(config(c), {nullptr, true});
  EXPECT_EQ(rest.start_step, 4);
  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  EXPECT_EQ(joined, ra.losses) << "the resumed run differs from the uninterrupted one";

  // The checkpoint: one train state per rank; its weights (whole, also when trained sharded) load
  // in one process.
  const std::string ckpt = (a / "checkpoints" / "0000000008").string();
  EXPECT_EQ(checkpoint_rank_count(ckpt), W);
  // Written in pieces, one file per rank (in parallel), no single-file form.
  for (int r = 0; r < W; ++r) EXPECT_TRUE(fs::exists(fs::path(ckpt) / checkpoint_shard_name(r))) << r;
  EXPECT_FALSE(fs::exists(fs::path(ckpt) / CheckpointFiles::weights));
  if (host().rank() == 0) {
    // `lingua consolidate` writes the single-file form of a copy: the same weights.
    const fs::path copy = temp_dir("dist_consolidated_" + tag) / "0000000008";
    fs::copy(ckpt, copy, fs::copy_options::recursive);
    auto [rc, out] = run_cli("consolidate ckpt=" + copy.string());
    EXPECT_EQ(rc, 0) << out;
    EXPECT_FALSE(fs::exists(copy / checkpoint_shard_name(0)));
    LoadedModel single = load_model(copy.string());
    for (int id : single.model->params().ids()) {
      const std::string& name = single.model->params().info(id).name;
      if (trained.count(name)) {
        EXPECT_EQ(single.model->params().host_param(id), trained.at(name)) << name;
      }
    }
    // `lingua export-hf` reads the sharded form directly: the same weights file as from the
    // consolidated one.
    if (mode == Mode::ddp || mode == Mode::fsdp) {
      const fs::path hf_sharded = temp_dir("dist_hf_sharded_" + tag), hf_single = temp_dir("dist_hf_single_" + tag);
      fs::remove_all(hf_sharded);
      fs::remove_all(hf_single);
      std::tie(rc, out) = run_cli("export-hf ckpt=" + ckpt + " out=" + hf_sharded.string());
      EXPECT_EQ(rc, 0) << out;
      std::tie(rc, out) = run_cli("export-hf ckpt=" + copy.string() + " out=" + hf_single.string());
      EXPECT_EQ(rc, 0) << out;
      auto a_files = snapshot(hf_sharded), b_files = snapshot(hf_single);
      EXPECT_TRUE(a_files.count("model.safetensors") && b_files.count("model.safetensors"));
      EXPECT_TRUE(a_files.count("model.safetensors") && a_files["model.safetensors"] == b_files["model.safetensors"])
          << "the exported weights differ";
    }
    // stem-edit reads the sharded form directly: token 'a' (97) gets token 'e''s (101) rows.
    if (stem(mode)) {
      const fs::path edited = temp_dir("dist_edited_" + tag);
      std::tie(rc, out) = run_cli("stem-edit ckpt=" + ckpt + " target=a source=e layers='[1]' out=" + edited.string());
      EXPECT_EQ(rc, 0) << out;
      LoadedModel e = load_model(edited.string());
      const ParamStore& s = e.model->params();
      const std::string table = "layers.1.feed_forward.stem_embedding.weight";
      const std::vector<float> t = s.host_param(s.index(table)), before = trained.at(table);
      const int64_t H = s.info(s.index(table)).shape[1];
      EXPECT_TRUE(std::equal(t.begin() + 97 * H, t.begin() + 98 * H, before.begin() + 101 * H)) << "row of 'a'";
      EXPECT_TRUE(std::equal(t.begin() + 98 * H, t.end(), before.begin() + 98 * H)) << "rows after 'a' unchanged";
    }
  }
  if (host().rank() == 0) {
    LoadedModel m = load_model(ckpt);
    const ParamStore& s = m.model->params();
    size_t compared = 0;
    for (int id : s.ids()) {
      if (!trained.count(s.info(id).name)) {
        ADD_FAILURE() << s.info(id).name << " was not trained";
        continue;
      }
      EXPECT_EQ(s.host_param(id), trained.at(s.info(id).name)) << "the checkpoint's " << s.info(id).name
                                                                << " is not the trained one";
      ++compared;
    }
    EXPECT_EQ(compared, trained.size());
    if (stem(mode)) {
      EXPECT_TRUE(trained.count("layers.1.feed_forward.stem_embedding.weight")) << "a STEM model";
    }
    // The data-loader state is per rank: one process gets the W ranks' states re-split.
    auto opt = std::make_unique<AdamW>(m.model->params(), m.config.optim);
    const TrainState st = load_training_checkpoint(ckpt, *m.model, *opt, 0, 1);
    EXPECT_EQ(st.step, 8);
    EXPECT_EQ(st.resplit_from, W);
    EXPECT_EQ(st.resplit_step, 8);
    DataLoader one(m.config.data, *m.tokenizer);
    one.load_state(st.data_loader);
    EXPECT_EQ(one.next().batch_size, m.config.data.batch_size);
    // metrics.jsonl: one line per logged step (rank 0 writes it).
    const auto lines = read_jsonl(a / "metrics.jsonl");
    EXPECT_EQ(lines.size(), 5u);  // steps 1, 2, 4, 6, 8
    EXPECT_EQ(lines.back()["global_step"].get<int64_t>(), 8);
    EXPECT_DOUBLE_EQ(lines.back()["loss/out"].get<double>(), ra.losses.back());
    EXPECT_EQ(lines.back()["optim/total_tokens"].get<int64_t>(), 8LL * 2 * 2 * 24 * W);
  }
  host().barrier();
  return ra.losses;
}

std::map<std::string, std::vector<double>>& ddp_losses() {  // by device, for FSDP to match
  static std::map<std::string, std::vector<double>> by_device;
  return by_device;
}

TEST(DistributedTrain, DeterministicResumableAndLoadableInOneProcess) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    ddp_losses()[device] = check_distributed_train(device, Mode::ddp);
  }
}

TEST(DistributedTrain, ShardedTrainsAsDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    if (!ddp_losses().count(device)) ddp_losses()[device] = check_distributed_train(device, Mode::ddp);
    const std::vector<double>& ddp = ddp_losses()[device];
    const std::vector<double> fsdp = check_distributed_train(device, Mode::fsdp);
    ASSERT_TRUE(losses_match(fsdp, ddp, device));
  }
}

// A rank that cannot write its shard: the save fails on every rank with that rank named, and no
// checkpoint is marked complete (nor a temporary directory left).
TEST(DistributedTrain, ARankFailingToWriteItsShardLeavesNoCompleteCheckpoint) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  const fs::path data = shared_corpus("dist_shard_fail"), dump = shared_dir("dist_shard_fail_dump");
  TrainConfig c = dist_config(data, dump, "cpu", Mode::fsdp);
  TrainHooks hooks{nullptr, true};
  hooks.before_shard_write = [](int rank, const std::string&) {
    if (rank == 1) throw Error("disk full (simulated)");
  };
  std::string error;
  try {
    train(c, hooks);
  } catch (const Error& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("rank 1 could not write its shard: disk full (simulated)"), std::string::npos) << error;
  host().barrier();
  EXPECT_TRUE(list_checkpoints((dump / "checkpoints").string()).empty());
  for (const auto& e : fs::directory_iterator(dump / "checkpoints"))
    ADD_FAILURE() << "left behind: " << e.path();
  host().barrier();
}

// STEM tables split by columns over 2 ranks train as DDP with whole tables (with DDP and with
// FSDP for the rest), deterministically, resume to the bit, and save whole tables.
TEST(DistributedTrain, StemTablesSplitByColumnsTrainAsDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const std::vector<double> ddp = check_distributed_train(device, Mode::stem_ddp);
    for (Mode m : {Mode::stem_tables, Mode::stem_tables_fsdp}) {
      const std::vector<double> split = check_distributed_train(device, m);
      ASSERT_TRUE(losses_match(split, ddp, device)) << mode_name(m);
    }
  }
}

// Self-guided LowRank layers under DDP and FSDP: every rank draws the same guides each step, the
// guides are dropped at step 4 (where the run also stops and resumes), and FSDP trains as DDP.
TEST(DistributedTrain, SelfGuidedStructuredTrainsAsDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const std::vector<double> ddp = check_distributed_train(device, Mode::guided_ddp);
    const std::vector<double> fsdp = check_distributed_train(device, Mode::guided_fsdp);
    ASSERT_TRUE(losses_match(fsdp, ddp, device));
  }
}

// Module tokens under DDP and FSDP: their gradients are complete before the data-parallel hooks
// reduce each layer's (the executor runs them first), and FSDP trains as DDP.
TEST(DistributedTrain, ModuleTokensTrainAsDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const std::vector<double> ddp = check_distributed_train(device, Mode::modules_ddp);
    const std::vector<double> fsdp = check_distributed_train(device, Mode::modules_fsdp);
    ASSERT_TRUE(losses_match(fsdp, ddp, device));
  }
}

// BlockShuffle and BlockDense FFNs under DDP and FSDP: their block factors shard like any
// parameter, and FSDP trains as DDP. BlockShuffle's in-run evaluations, pre-merged (from sharded
// factors under FSDP), equal DDP's and the factored evaluation of the checkpoint in one process.
TEST(DistributedTrain, BlockFfnsTrainAsDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  for (const std::string& device : test_devices())
    for (Mode ddp_mode : {Mode::blockshuffle_ddp, Mode::blockdense_ddp}) {
      SCOPED_TRACE(device + " " + mode_name(ddp_mode));
      fs::path ddp_dir, fsdp_dir;
      const std::vector<double> ddp = check_distributed_train(device, ddp_mode, &ddp_dir);
      const std::vector<double> fsdp = check_distributed_train(device, Mode((int)ddp_mode + 1), &fsdp_dir);
      ASSERT_TRUE(losses_match(fsdp, ddp, device));
      if (ddp_mode != Mode::blockshuffle_ddp || host().rank() != 0) continue;
      const double tol = loss_tolerance(device);
      const auto ddp_evals = read_jsonl(ddp_dir / "metrics.eval.jsonl"),
                 fsdp_evals = read_jsonl(fsdp_dir / "metrics.eval.jsonl");
      ASSERT_EQ(ddp_evals.size(), 2u);  // steps 4 and 8
      ASSERT_EQ(fsdp_evals.size(), 2u);
      for (size_t e = 0; e < 2; ++e) {
        const double d = ddp_evals[e]["toy/nll_per_token"].get<double>(),
                     f = fsdp_evals[e]["toy/nll_per_token"].get<double>();
        EXPECT_NEAR(f, d, tol * d) << "evaluation " << e;
      }
      LoadedModel m = load_model((fsdp_dir / "checkpoints" / "0000000008").string(), "", device,
                                 [](TrainConfig& c) { c.model.structured.premerge_max_tokens = 0; });
      const double factored =
          evaluate_validation(*m.exec, *m.tokenizer, m.config.data, m.config.eval.max_tokens).at("toy").nll_per_token();
      const double merged = fsdp_evals[1]["toy/nll_per_token"].get<double>();
      EXPECT_NEAR(merged, factored, tol * factored);
    }
}

// Under mpirun -np 4 (ctest's _4ranks run): HSDP, 2 replicas x 2 shards, trains as DDP over the
// 4 ranks (and is deterministic, resumes to the bit, and writes a checkpoint one process loads).
TEST(DistributedTrain, FourRanksHybridShardedTrainsAsDataParallel) {
  if (host().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const std::vector<double> ddp = check_distributed_train(device, Mode::ddp);
    const std::vector<double> hsdp = check_distributed_train(device, Mode::hsdp);
    ASSERT_TRUE(losses_match(hsdp, ddp, device));
  }
}

// Under 4 ranks: two groups of 2 each split the STEM tables (replicas of each other).
TEST(DistributedTrain, FourRanksStemTablesInTwoGroupsTrainAsDataParallel) {
  if (host().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const std::vector<double> ddp = check_distributed_train(device, Mode::stem_ddp);
    const std::vector<double> split = check_distributed_train(device, Mode::stem_tables);
    ASSERT_TRUE(losses_match(split, ddp, device));
  }
}

// Model growth under DDP (G_random in depth and width: its masks multiply each block's weights and
// gradients before the data-parallel hooks reduce them): deterministic, at the growth the source's
// function (the first grown loss is the source run's next one), resumable mid-ramp to the bit;
// and under FSDP and HSDP, where they act on the gathered weights, DDP's losses.
// shards: the dp_shard values of the FSDP runs compared with DDP's.
void check_random_growth_in_width(const std::vector<int>& shards, bool with_modules = false) {
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const std::string tag = device + std::to_string(host().size()) + (with_modules ? "_mod" : "");
    const fs::path data = shared_corpus("dist_grow_" + tag);
    auto config = [&](const fs::path& dump) {
      TrainConfig c = dist_config(data, dump, device, Mode::ddp);
      c.checkpoint.dump.every = 1;
      c.checkpoint.eval.every = 0;
      c.model.n_layers = 4;
      c.model.n_kv_heads.reset();
      c.model.head_dim = 8;
      c.growth.step = 3;
      c.growth.op = "random";
      c.growth.source.yaml = "{n_layers: 2, dim: 16, n_heads: 2, norm_eps: 2.0e-5}";
      c.growth.stacking_list = std::vector<int>{0, -1, 1, -1};
      c.growth.ramp_steps = 2;
      c.steps = 8;
      c.model.norm_eps = 1e-5;
      if (with_modules) {  // (module_agg=stack: a new block 0 under the module rows' entry)
        c.model.modules = {"m"};
        c.model.module_seq_len = 2;
        c.model.module_agg = "stack";
        c.growth.stacking_list = std::vector<int>{-1, 0, -1, 1};
      }
      return c;
    };
    const TrainResult a = train(config(shared_dir("dist_grow_a_" + tag)), {nullptr, true});
    ASSERT_EQ(a.losses.size(), 8u);
    const TrainResult b = train(config(shared_dir("dist_grow_b_" + tag)), {nullptr, true});
    EXPECT_EQ(b.losses, a.losses) << "two runs of the same config differ";
    // The source alone for 3 steps, then one more.
    TrainConfig src = config(shared_dir("dist_grow_src_" + tag));
    src.model = growth_source_model(src);
    src.growth = GrowthConfig{};
    src.steps = 3;
    train(src, {nullptr, true});
    src.steps = 4;
    const double next = train(src, {nullptr, true}).losses.at(0);
    EXPECT_NEAR(next, a.losses[3], loss_tolerance(device) * next) << "every m = 0 at the growth";
    // Stopped mid-ramp (step 5), resumed: the same losses.
    expect_resumes_bitwise_after(config(""), a, 5, "dist_grow_c_" + tag);
    // FSDP (dp_shard every rank) or HSDP (groups of 2 of 4 ranks): the masks act on each block's gathered
    // weights and on its full-shape gradients before the reduce-scatter: DDP's losses (to the
    // summation order), and a run stopped mid-ramp resumes to the bit.
    for (int shard : shards) {
      SCOPED_TRACE("dp_shard " + std::to_string(shard));
      auto sharded = [&](const fs::path& dump) {
        TrainConfig s = config(dump);
        s.distributed.fsdp_type = "full_shard";
        s.distributed.dp_shard = shard;
        return s;
      };
      const std::string name = "dist_grow_fsdp" + std::to_string(shard) + "_" + tag;
      const TrainResult f = train(sharded(shared_dir(name)), {nullptr, true});
      ASSERT_TRUE(losses_match(f.losses, a.losses, device));
      expect_resumes_bitwise_after(sharded(""), f, 5, name + "_stop");
    }
    host().barrier();
  }
}

TEST(DistributedTrain, RandomGrowthInWidthTrainsUnderDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  check_random_growth_in_width({host().size()});
}

// With module tokens: their hook (the outermost model hook) reads its rows' gradient once the ramp
// has finished it, and DDP's and FSDP's hooks come after both.
TEST(DistributedTrain, RandomGrowthWithModuleTokensTrainsUnderDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  check_random_growth_in_width({host().size()}, true);
}

TEST(DistributedTrain, FourRanksRandomGrowthInWidthTrainsUnderHsdp) {
  if (host().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  check_random_growth_in_width({2});
}

// G_learn under DDP: each rank learns the map from its own batches, their gradients summed, so the
// map (and the grown weights) stay the same on every rank; deterministic, resumable after the
// growth to the bit, and the FLOPs count the map's batches of every rank.
TEST(DistributedTrain, LearnedGrowthTrainsUnderDataParallel) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const std::string tag = device + std::to_string(host().size());
    const fs::path data = shared_corpus("dist_learn_" + tag);
    auto config = [&](const fs::path& dump) {
      TrainConfig c = dist_config(data, dump, device, Mode::ddp);
      c.checkpoint.dump.every = 1;
      c.checkpoint.eval.every = 0;
      c.model.n_layers = 4;
      c.growth.step = 3;
      c.growth.op = "learn";
      c.growth.source.yaml = "{n_layers: 2}";
      c.growth.learn_steps = 3;
      c.growth.learn_lr = 0.01;
      c.steps = 6;
      c.logging.freq = 1;
      return c;
    };
    // Sums of the trained weights on this rank: the same on every rank.
    std::vector<double> checksum(2, 0.0);
    TrainHooks quiet{nullptr, true};
    quiet.at_end = [&](Executor& exec) {
      const std::vector<float> w = exec.model().params().host_values();
      for (size_t i = 0; i < w.size(); ++i) checksum[0] += w[i], checksum[1] += w[i] * (double)(i % 97);
    };
    const fs::path a_dir = shared_dir("dist_learn_a_" + tag);
    const TrainResult a = train(config(a_dir), quiet);
    ASSERT_EQ(a.losses.size(), 6u);
    std::vector<double> lo = checksum, hi = checksum;
    host().all_reduce(lo.data(), 2, ReduceOp::min);
    host().all_reduce(hi.data(), 2, ReduceOp::max);
    EXPECT_EQ(lo, hi) << "the ranks' grown weights differ";
    const TrainResult b = train(config(shared_dir("dist_learn_b_" + tag)), {nullptr, true});
    EXPECT_EQ(b.losses, a.losses) << "two runs of the same config differ";
    const fs::path c = shared_dir("dist_learn_c_" + tag);
    const TrainResult first = train(config(c), {[](int64_t step) { return step < 4; }, true});
    ASSERT_EQ(first.final_step, 4);
    const TrainResult rest = train(config(c), {nullptr, true});
    ASSERT_EQ(rest.start_step, 4);
    for (size_t i = 0; i < rest.losses.size(); ++i) EXPECT_EQ(rest.losses[i], a.losses[4 + i]) << "step " << 5 + i;
    if (host().rank() == 0) {
      // FLOPs: a step takes 2 x 24 x 2 tokens on each rank, the map's 3 batches 2 x 24 each on
      // each rank (1.5 steps of the grown model), so step 4 adds a grown step plus 1.5 of them.
      const auto lines = read_jsonl(a_dir / "metrics.jsonl");
      ASSERT_EQ(lines.size(), 6u);
      auto flops = [&](int step) { return lines.at(step - 1)["optim/total_flops"].get<double>(); };
      const double grown_step = flops(6) - flops(5);
      EXPECT_NEAR(flops(4) - flops(3), 2.5 * grown_step, 1e-9 * grown_step);
      EXPECT_NEAR(flops(5) - flops(4), grown_step, 1e-9 * grown_step);
    }
    host().barrier();
  }
}

}  // namespace
