// `lingua train` over several processes (run by ctest under `mpirun -np 2`; every rank runs every
// test): data-parallel training on the CPU through MPI (and on CUDA through NCCL where GPUs are
// visible), with the checkpoints it writes:
//  - two runs of the same config give bitwise the same losses (determinism at a fixed world size);
//  - a run stopped at a checkpoint and resumed gives bitwise the losses of an uninterrupted run;
//  - the checkpoint holds one train state per rank and weights that one process loads
//    (load_model) equal to every rank's trained weights;
//  - one process loads it with the ranks' data-loader states re-split over one rank (resuming on
//    another count end to end: test_resplit_e2e.cpp);
//  - metrics.jsonl is written once (by rank 0), with the loss over every rank's tokens.
#include <gtest/gtest.h>

#include <filesystem>

#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/core/cuda.h"
#include "lingua/data/loader.h"
#include "lingua/dist/world.h"
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

TrainConfig dist_config(const fs::path& data, const fs::path& dump, const std::string& device) {
  TrainConfig c = tiny_config(data, dump);
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
  if (cuda_device_count() > 0) {
    static bool selected = (select_local_gpu(process_world()), true);
    (void)selected;
    d.push_back("cuda");
  }
  return d;
}

TEST(DistributedTrain, DeterministicResumableAndLoadableInOneProcess) {
  ASSERT_GE(host().size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  const int W = host().size();
  for (const std::string& device : test_devices()) {
    SCOPED_TRACE(device);
    const fs::path data = shared_corpus("dist_train_" + device);
    // An uninterrupted run, and the same config again.
    const fs::path a = shared_dir("dist_a_" + device), b = shared_dir("dist_b_" + device);
    std::vector<float> trained;
    TrainHooks quiet{nullptr, true};
    quiet.at_end = [&](Executor& exec) { trained = exec.model().params().host_values(); };
    const TrainResult ra = train(dist_config(data, a, device), quiet);
    ASSERT_EQ(ra.losses.size(), 8u);
    const TrainResult rb = train(dist_config(data, b, device), {nullptr, true});
    EXPECT_EQ(rb.losses, ra.losses) << "two runs of the same config differ";
    // The loss is the mean over every rank's tokens: the same number on every rank.
    std::vector<double> mine(ra.losses.begin(), ra.losses.end()), lo = mine, hi = mine;
    host().all_reduce(lo.data(), (int64_t)lo.size(), ReduceOp::min);
    host().all_reduce(hi.data(), (int64_t)hi.size(), ReduceOp::max);
    EXPECT_EQ(lo, hi) << "ranks report different losses";

    // Stopped after the checkpoint of step 4, then resumed: the same losses to the bit.
    const fs::path c = shared_dir("dist_c_" + device);
    TrainHooks stop{[](int64_t step) { return step < 4; }, true};
    const TrainResult first = train(dist_config(data, c, device), stop);
    ASSERT_EQ(first.final_step, 4);
    const TrainResult rest = train(dist_config(data, c, device), {nullptr, true});
    EXPECT_EQ(rest.start_step, 4);
    std::vector<double> joined = first.losses;
    joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
    EXPECT_EQ(joined, ra.losses) << "the resumed run differs from the uninterrupted one";

    // The checkpoint: one train state per rank; its weights load in one process.
    const std::string ckpt = (a / "checkpoints" / "0000000008").string();
    EXPECT_EQ(checkpoint_rank_count(ckpt), W);
    if (host().rank() == 0) {
      LoadedModel m = load_model(ckpt);
      EXPECT_EQ(m.model->params().host_values(), trained) << "the checkpoint's weights are not the trained ones";
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
      ASSERT_EQ(lines.size(), 5u);  // steps 1, 2, 4, 6, 8
      EXPECT_EQ(lines.back()["global_step"].get<int64_t>(), 8);
      EXPECT_DOUBLE_EQ(lines.back()["loss/out"].get<double>(), ra.losses.back());
      EXPECT_EQ(lines.back()["optim/total_tokens"].get<int64_t>(), 8LL * 2 * 2 * 24 * W);
    }
    // Every rank holds the weights rank 0 saved.
    std::vector<uint64_t> sums(W);
    uint64_t h = 0;
    for (float x : trained) h = h * 1000003u + (uint64_t)std::hash<float>{}(x);
    host().all_gather(&h, sums.data(), sizeof h);
    for (int r = 1; r < W; ++r) EXPECT_EQ(sums[r], sums[0]) << "rank " << r << "'s weights differ from rank 0's";
    host().barrier();
  }
}

}  // namespace
