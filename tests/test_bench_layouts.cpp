// Loss curves of one layout against another (what the GPU comparison of 1 GPU, DDP, FSDP, HSDP and
// split STEM tables checks, bench/run_dist_curves.sh), on the CPU: `lingua bench bench.tokens=global`
// draws the rows of one global batch, so 2 processes with batch_size 1 (started by `lingua launch`,
// over TCP) train on what one process with batch_size 2 trains on; every layout's per-step losses
// equal the one process's to fp32 summation order, and the result line lists them.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua::test_e2e;

namespace {

const std::string kModel =
    " device=cpu threads=1 bench.warmup=0 bench.steps=6 bench.tokens=global data.seq_len=16 model.dim=32 "
    "model.n_layers=2 model.n_heads=4 model.n_kv_heads=2 model.multiple_of=16 model.vocab_size=64 optim.lr=1e-2 "
    "optim.warmup=0 cuda_graph=false";

// The per-step losses of `lingua [launch nproc=N] bench ...`.
std::vector<double> curve(const std::string& launch, const std::string& args, const std::string& tag,
                          bool listed = true) {
  const fs::path dir = temp_dir("bench_layouts_" + tag);
  const fs::path out = dir / "bench.jsonl";
  auto [rc, text] = run_cli(launch + "bench" + kModel + " dump_dir=" + dir.string() + " bench.out=" + out.string() +
                            " " + args);
  EXPECT_EQ(rc, 0) << text;
  const auto lines = read_jsonl(out);
  if (lines.size() != 1u) {
    ADD_FAILURE() << tag << ": " << lines.size() << " result lines\n" << text;
    return {};
  }
  EXPECT_EQ(lines[0].contains("losses"), listed) << lines[0].dump();
  return lines[0].value("losses", std::vector<double>{});
}

void expect_same_curve(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-5 * std::abs(want[i])) << what << ", step " << i + 1;
}

}  // namespace

TEST(BenchLayouts, TwoProcessesTrainAsOneOnTheGlobalBatch) {
  const std::vector<double> one = curve("", "data.batch_size=2", "one");
  ASSERT_EQ(one.size(), 6u);
  EXPECT_LT(one.back(), one.front()) << "the curve goes down";
  const std::string two = "launch nproc=2 ";
  expect_same_curve(curve(two, "data.batch_size=1", "ddp"), one, "DDP x2");
  expect_same_curve(curve(two, "data.batch_size=1 distributed.fsdp_type=full_shard distributed.dp_shard=2", "fsdp"),
                    one, "FSDP x2");
  // A per-rank draw (the default) is another batch: the curve differs.
  EXPECT_TRUE(curve(two, "data.batch_size=1 bench.tokens=rank", "rank", false).empty()) << "rank draws list no losses";
}

// Four processes: HSDP (2 replicas x 2 shards), and STEM tables split over groups of 2 (replicas).
TEST(BenchLayouts, FourProcessesHybridShardedAndSplitTables) {
  const std::string four = "launch nproc=4 ";
  const std::vector<double> one = curve("", "data.batch_size=4", "one4");
  expect_same_curve(curve(four, "data.batch_size=1 distributed.fsdp_type=full_shard distributed.dp_shard=2", "hsdp"),
                    one, "HSDP 2x2");
  const std::vector<double> stem_one = curve("", "data.batch_size=4 model.ffn=stem", "stem_one4");
  expect_same_curve(curve(four, "data.batch_size=1 model.ffn=stem distributed.stem_parallel_size=2", "stem_split4"),
                    stem_one, "STEM tables split over 2, 2 groups");
}

TEST(BenchLayouts, SplitTablesTrainAsWholeTables) {
  const std::string stem = " model.ffn=stem";
  const std::vector<double> one = curve("", "data.batch_size=2" + stem, "stem_one");
  ASSERT_EQ(one.size(), 6u);
  expect_same_curve(curve("launch nproc=2 ", "data.batch_size=1 distributed.stem_parallel_size=2" + stem, "stem_split"),
                    one, "STEM tables split over 2");
}
