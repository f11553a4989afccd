// Resuming on another rank count through the command line (lingua/data/resplit.h): checkpoints of
// `lingua launch nproc=2 train` resume in one process and back on two, continuing from their step
// with a note naming both counts; the train states record the re-split, and a checkpoint written
// after it resumes bitwise on its own count again.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/checkpoint/train_state.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// A tiny byte-level run of `steps` steps, a checkpoint every 2.
std::string train_args(const fs::path& data, const fs::path& dump, int steps) {
  return "train dump_dir=" + dump.string() + " data.root_dir=" + data.string() +
         " 'data.sources={toy: 1}' data.batch_size=2 data.seq_len=24 data.prefetch_size=3 data.load_async=false "
         "model.dim=32 model.n_layers=1 model.n_heads=2 model.multiple_of=16 model.max_seqlen=32 device=cpu threads=1 "
         "optim.warmup=2 logging.freq=1 checkpoint.dump.every=2 checkpoint.dump.keep=0 steps=" +
         std::to_string(steps);
}

TrainState state_of(const fs::path& ckpt, int rank) {
  const fs::path p = ckpt / CheckpointFiles::train_state(rank);
  return parse_train_state(read_text_file(p.string()), p.string());
}

// loss/out by global_step.
std::map<int64_t, double> losses(const fs::path& dump) {
  std::map<int64_t, double> out;
  for (const auto& j : read_jsonl(dump / "metrics.jsonl")) out[j["global_step"].get<int64_t>()] = j["loss/out"].get<double>();
  return out;
}

}  // namespace

TEST(ResplitE2E, TwoRanksThenOneThenTwo) {
  const fs::path data = make_corpus("resplit_e2e");
  const fs::path dump = temp_dir("resplit_e2e_dump");
  const fs::path ckpts = dump / "checkpoints";

  auto [rc, out] = run_cli("launch nproc=2 " + train_args(data, dump, 4));
  ASSERT_EQ(rc, 0) << out;
  ASSERT_EQ(checkpoint_rank_count((ckpts / "0000000004").string()), 2) << out;

  // One process resumes the two ranks' checkpoint.
  std::tie(rc, out) = run_cli(train_args(data, dump, 8));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("resumed from " + (ckpts / "0000000004").string() + " (step 4)"), std::string::npos) << out;
  EXPECT_NE(out.find("note: " + (ckpts / "0000000004").string() +
                     " was saved by 2 data-parallel ranks and this run has 1"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("step 5/8"), std::string::npos) << out;
  EXPECT_EQ(out.find("step 4/8"), std::string::npos) << out;
  for (const char* step : {"0000000006", "0000000008"}) {
    ASSERT_EQ(checkpoint_rank_count((ckpts / step).string()), 1) << step;
    const TrainState st = state_of(ckpts / step, 0);
    EXPECT_EQ(st.resplit_from, 2) << step;
    EXPECT_EQ(st.resplit_step, 4) << step;
  }
  std::map<int64_t, double> one = losses(dump);
  ASSERT_EQ(one.size(), 8u);  // steps 1-4 on two ranks, 5-8 on one

  // A checkpoint written after the re-split resumes exactly on its own count: steps 7 and 8 again
  // from step 6, without a note.
  const fs::path again = temp_dir("resplit_e2e_again");
  fs::copy(dump, again, fs::copy_options::recursive);
  fs::remove_all(again / "checkpoints" / "0000000008");
  std::tie(rc, out) = run_cli(train_args(data, again, 8));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("(step 6)"), std::string::npos) << out;
  EXPECT_EQ(out.find("data-parallel rank"), std::string::npos) << out;
  const std::map<int64_t, double> redo = losses(again);
  EXPECT_EQ(redo.at(7), one.at(7));
  EXPECT_EQ(redo.at(8), one.at(8));
  EXPECT_EQ(state_of(again / "checkpoints" / "0000000008", 0).resplit_step, 4);

  // Back on two ranks.
  std::tie(rc, out) = run_cli("launch nproc=2 " + train_args(data, dump, 10));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("note: " + (ckpts / "0000000008").string() +
                     " was saved by 1 data-parallel rank and this run has 2"),
            std::string::npos)
      << out;
  ASSERT_EQ(checkpoint_rank_count((ckpts / "0000000010").string()), 2);
  for (int r = 0; r < 2; ++r) {
    const TrainState st = state_of(ckpts / "0000000010", r);
    EXPECT_EQ(st.step, 10);
    EXPECT_EQ(st.resplit_from, 1);
    EXPECT_EQ(st.resplit_step, 8);
  }
  EXPECT_EQ(losses(dump).size(), 10u);
}

// kill -9 of one rank while two train with FSDP and write checkpoints: the launcher stops the other
// and names the killed rank; the newest complete checkpoint (sharded, one file per rank) then
// resumes in one process and the run goes on from its step.
TEST(ResplitE2E, RankKilledMidRunThenResumedOnAnotherCount) {
  const fs::path data = make_corpus("kill9_e2e");
  const fs::path dump = temp_dir("kill9_e2e_dump");
  const fs::path log = dump.string() + ".log", rc_file = dump.string() + ".rc";
  // Far more steps than can run before the kill; checkpoints every 2 (the newest 3 kept).
  const std::string args = "launch nproc=2 " + train_args(data, dump, 100000) +
                           " checkpoint.dump.keep=3 distributed.fsdp_type=full_shard distributed.dp_shard=2";
  const fs::path script = dump.string() + ".sh";
  std::ofstream(script) << std::string(LINGUA_BINARY) << " " << args << " > " << log.string() << " 2>&1 &\n"
                        << "L=$!\n"
                        // until a checkpoint of step >= 6 is complete (or 60 s), then SIGKILL rank 1 (the
                        // launcher's second child)
                        << "for i in $(seq 600); do ls " << (dump / "checkpoints").string()
                        << "/*/complete 2>/dev/null | grep -qv -e 0000000002 -e 0000000004 && break; sleep 0.1; done\n"
                        << "kill -KILL $(pgrep -P $L | sed -n 2p)\nwait $L\necho $? > " << rc_file.string() << "\n";
  ASSERT_EQ(std::system(("bash " + script.string()).c_str()), 0);
  const std::string out = read_text_file(log.string());
  EXPECT_EQ(read_text_file(rc_file.string()), std::to_string(128 + 9) + "\n") << out;
  EXPECT_NE(out.find("rank 1 (pid "), std::string::npos) << out;
  EXPECT_NE(out.find("was killed by SIGKILL; stopping the other ranks"), std::string::npos) << out;
  const auto ckpts = list_checkpoints((dump / "checkpoints").string());
  ASSERT_FALSE(ckpts.empty()) << out;
  const CheckpointEntry newest = ckpts.back();
  ASSERT_GE(newest.step, 6);
  EXPECT_EQ(checkpoint_rank_count(newest.path), 2);
  EXPECT_TRUE(fs::exists(fs::path(newest.path) / "shard_00001.safetensors"));
  // One process goes on from there, 2 more steps.
  const int64_t until = newest.step + 2;
  auto [rc, again] = run_cli(train_args(data, dump, (int)until));
  ASSERT_EQ(rc, 0) << again;
  EXPECT_NE(again.find("resumed from " + newest.path + " (step " + std::to_string(newest.step) + ")"),
            std::string::npos)
      << again;
  EXPECT_EQ(again.find("corrupt"), std::string::npos) << again;
  EXPECT_EQ(list_checkpoints((dump / "checkpoints").string()).back().step, until);
}
