// End-to-end: a run whose newest checkpoints are corrupt (truncated, garbage header, a flipped data
// byte, a bad train state) resumes from the newest one that loads, warns naming the corrupt one,
// and then runs exactly as an uninterrupted run; pruning after such a resume keeps the new
// checkpoints; when none loads, training does not start.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

std::string slurp(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Flips a bit of the last data byte of the file's last tensor (its header stays intact).
void flip_last_data_byte(const fs::path& path) {
  std::string bytes = slurp(path);
  SafetensorsFile f = SafetensorsFile::open(path.string());
  const TensorInfo& last = f.info(f.names().back());  // the writer lays tensors out in header order
  ASSERT_GT(last.end, last.begin);
  bytes.back() = static_cast<char>(bytes.back() ^ 0x01);
  spit(path, bytes);
}

// 20 steps, checkpoints every 5 (all kept unless `keep`).
TrainConfig config(const fs::path& data, const fs::path& dump, int keep = 0) {
  TrainConfig c = tiny_config(data, dump);
  c.checkpoint.dump.every = 5;
  c.checkpoint.dump.keep = keep;
  c.checkpoint.eval.every = 0;
  return c;
}

// Quiet, stopping after the step where `go_on` says false (empty: run to the end).
TrainHooks quiet(std::function<bool(int64_t)> go_on = {}) {
  TrainHooks h;
  h.after_step = std::move(go_on);
  h.quiet = true;
  return h;
}

// Runs train() capturing stderr.
std::pair<TrainResult, std::string> train_capturing(const TrainConfig& c, const TrainHooks& hooks) {
  testing::internal::CaptureStderr();
  TrainResult r;
  try {
    r = train(c, hooks);
  } catch (...) {
    testing::internal::GetCapturedStderr();
    throw;
  }
  return {r, testing::internal::GetCapturedStderr()};
}

std::string step_dir(const fs::path& dump, int64_t step) {
  return (dump / "checkpoints" / checkpoint_dir_name(step)).string();
}

}  // namespace

TEST(CheckpointRecovery, CorruptNewestResumesFromThePreviousOneExactly) {
  const fs::path data = make_corpus("recovery");
  const TrainResult straight = train(config(data, temp_dir("recovery_straight")), quiet());
  ASSERT_EQ(straight.losses.size(), 20u);
  // A run that stopped after step 15: checkpoints 5, 10, 15.
  const fs::path stopped = temp_dir("recovery_stopped");
  train(config(data, stopped), quiet([](int64_t s) { return s < 15; }));
  ASSERT_EQ(list_checkpoints((stopped / "checkpoints").string()).size(), 3u);

  const std::string ts = CheckpointFiles::train_state(0);
  const std::vector<std::tuple<std::string, std::string, std::function<void(const fs::path&)>>> corruptions = {
      {"flipped", "checksum mismatch",
       [](const fs::path& d) { flip_last_data_byte(d / CheckpointFiles::optimizer); }},
      {"flipped_weight", "checksum mismatch",
       [](const fs::path& d) { flip_last_data_byte(d / CheckpointFiles::weights); }},
      {"truncated", "truncated",
       [](const fs::path& d) { fs::resize_file(d / CheckpointFiles::weights, fs::file_size(d / CheckpointFiles::weights) / 2); }},
      {"header", "'{'", [](const fs::path& d) {
         std::string b = slurp(d / CheckpointFiles::optimizer);
         b[8] = 'x';
         spit(d / CheckpointFiles::optimizer, b);
       }},
      {"train_state", "not valid JSON", [ts](const fs::path& d) { fs::resize_file(d / ts, fs::file_size(d / ts) - 3); }},
      {"loader_state", "data loader state", [ts](const fs::path& d) {
         nlohmann::json j = nlohmann::json::parse(slurp(d / ts));
         j["data_loader"]["version"] = 999;
         spit(d / ts, j.dump());
       }},
  };
  for (const auto& [tag, reason, corrupt] : corruptions) {
    SCOPED_TRACE(tag);
    const fs::path dump = temp_dir("recovery_" + tag);
    fs::copy(stopped / "checkpoints", dump / "checkpoints", fs::copy_options::recursive);
    corrupt(step_dir(dump, 15));
    auto [r, err] = train_capturing(config(data, dump), quiet());
    EXPECT_EQ(r.start_step, 10);
    ASSERT_EQ(r.final_step, 20);
    EXPECT_NE(err.find("lingua: warning: checkpoint " + step_dir(dump, 15) + " is corrupt ("), std::string::npos) << err;
    EXPECT_NE(err.find(reason), std::string::npos) << err;
    EXPECT_NE(err.find("resuming from " + step_dir(dump, 10)), std::string::npos) << err;
    EXPECT_NE(err.find("kept as " + step_dir(dump, 15) + ".corrupt"), std::string::npos) << err;
    // Steps 11..20 exactly as the uninterrupted run's.
    ASSERT_EQ(r.losses.size(), 10u);
    for (size_t i = 0; i < r.losses.size(); ++i) EXPECT_EQ(r.losses[i], straight.losses[10 + i]) << "step " << 11 + i;
    EXPECT_TRUE(fs::exists(step_dir(dump, 15) + ".corrupt"));
    EXPECT_TRUE(is_complete_checkpoint(step_dir(dump, 15)));  // written again by the resumed run
  }
}

TEST(CheckpointRecovery, PruningAfterAFallbackKeepsTheNewCheckpoints) {
  const fs::path data = make_corpus("recovery_prune");
  const TrainResult straight = train(config(data, temp_dir("recovery_prune_straight")), quiet());
  const fs::path dump = temp_dir("recovery_prune");
  train(config(data, dump), quiet([](int64_t s) { return s < 15; }));
  // The two newest corrupt: the run resumes from step 5 with keep=1 and stops after saving step 10.
  fs::resize_file(fs::path(step_dir(dump, 15)) / CheckpointFiles::optimizer, 20);
  flip_last_data_byte(fs::path(step_dir(dump, 10)) / CheckpointFiles::weights);
  auto [r1, err] = train_capturing(config(data, dump, 1), quiet([](int64_t s) { return s < 10; }));
  EXPECT_EQ(r1.start_step, 5);
  EXPECT_NE(err.find("checkpoint " + step_dir(dump, 15) + " is corrupt"), std::string::npos) << err;
  EXPECT_NE(err.find("checkpoint " + step_dir(dump, 10) + " is corrupt"), std::string::npos) << err;
  // keep=1 kept the step just written, not the corrupt step 15 (which would look newer).
  auto left = list_checkpoints((dump / "checkpoints").string());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].step, 10);
  // A restart resumes from it, without warnings, and finishes as the uninterrupted run.
  auto [r2, err2] = train_capturing(config(data, dump, 1), quiet());
  EXPECT_EQ(r2.start_step, 10);
  EXPECT_EQ(err2.find("warning"), std::string::npos) << err2;
  std::vector<double> joined = r1.losses;
  joined.insert(joined.end(), r2.losses.begin(), r2.losses.end());
  ASSERT_EQ(joined.size(), 15u);
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.losses[5 + i]) << "step " << 6 + i;
  EXPECT_TRUE(fs::exists(step_dir(dump, 15) + ".corrupt"));
  EXPECT_TRUE(fs::exists(step_dir(dump, 10) + ".corrupt"));
}

TEST(CheckpointRecovery, NoCheckpointLoadsIsAnError) {
  const fs::path data = make_corpus("recovery_none");
  const fs::path dump = temp_dir("recovery_none");
  train(config(data, dump), quiet([](int64_t s) { return s < 10; }));
  for (int s : {5, 10}) flip_last_data_byte(fs::path(step_dir(dump, s)) / CheckpointFiles::weights);
  try {
    train_capturing(config(data, dump), quiet());
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (int s : {5, 10}) EXPECT_NE(msg.find(step_dir(dump, s) + ": checksum mismatch"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not starting from scratch"), std::string::npos) << msg;
  }
  // Nothing set aside, nothing written.
  auto left = list_checkpoints((dump / "checkpoints").string());
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[1].step, 10);
  EXPECT_FALSE(fs::exists(step_dir(dump, 10) + ".corrupt"));
}
