// Reference losses: the per-step training losses recorded before a refactoring, which a later
// version must reproduce bit for bit (tests/reference/*.json). CPU: 50 steps of configs/demo.yaml
// on the bundled corpus with 2 threads. GPU: 50 steps of `lingua bench` on the benchmark configs.
//
// A reference is compared bitwise when it was recorded on the same kind of machine (the OpenBLAS
// kernel set on the CPU, the GPU's name on CUDA). Each machine kind may have its own file,
// <key>@<machine>.json, beside the first one, <key>.json: cuBLAS and cuDNN pick kernels per GPU
// model, so an H100 and an H200 differ from the second step on some shapes (deterministically on
// each). Where no file of this machine exists, the run is compared with <key>.json loosely: the
// first 10 steps within 1e-3 relative, every step within 0.1 absolute (training on one repeated
// batch amplifies rounding differences once the loss nears zero; the message says which ran).
// Recording: LINGUA_RECORD_REFERENCE=1 ctest -R ReferenceLosses (writes <key>.json, or
// <key>@<machine>.json when <key>.json was made on another machine, in the source tree, or in
// LINGUA_REFERENCE_DIR when set: e.g. references made by an older build on the same machine).
#include <cblas.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lingua/config/config.h"
#include "lingua/core/cuda.h"
#include "lingua/train/bench.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;
using json = nlohmann::json;

namespace {

constexpr int kSteps = 50;

fs::path reference_dir() {
  const char* dir = std::getenv("LINGUA_REFERENCE_DIR");
  return dir && *dir ? fs::path(dir) : fs::path(LINGUA_SOURCE_DIR) / "tests" / "reference";
}

// "cuda/NVIDIA H100 80GB HBM3" -> "cuda_NVIDIA_H100_80GB_HBM3"
std::string file_slug(const std::string& machine) {
  std::string s = machine;
  for (char& c : s)
    if (!std::isalnum((unsigned char)c)) c = '_';
  return s;
}

bool recording() {
  const char* r = std::getenv("LINGUA_RECORD_REFERENCE");
  return r && std::string(r) == "1";
}

// Records (LINGUA_RECORD_REFERENCE=1) or checks `losses` against the reference `key`, made on
// `machine` by `command`.
void record_or_check(const std::string& key, const std::string& machine, const std::string& command,
                     const std::vector<double>& losses) {
  ASSERT_EQ(losses.size(), (size_t)kSteps);
  const fs::path first = reference_dir() / (key + ".json");
  const fs::path own = reference_dir() / (key + "@" + file_slug(machine) + ".json");
  auto made_on = [](const fs::path& p) { return json::parse(std::ifstream(p)).at("machine").get<std::string>(); };
  if (recording()) {
    const fs::path path = !fs::exists(first) || made_on(first) == machine ? first : own;
    fs::create_directories(path.parent_path());
    json j = {{"machine", machine}, {"command", command}, {"losses", losses}};
    std::ofstream(path) << j.dump(1) << "\n";
    GTEST_SKIP() << "recorded " << path;
  }
  const fs::path path = fs::exists(own) ? own : first;
  ASSERT_TRUE(fs::exists(path)) << "no reference " << path << " (record it with LINGUA_RECORD_REFERENCE=1)";
  json ref = json::parse(std::ifstream(path));
  const std::vector<double> want = ref.at("losses").get<std::vector<double>>();
  ASSERT_EQ(want.size(), losses.size());
  const std::string ref_machine = ref.at("machine").get<std::string>();
  const bool bitwise = ref_machine == machine;
  for (size_t i = 0; i < want.size(); ++i) {
    if (bitwise)
      ASSERT_EQ(losses[i], want[i]) << key << ": step " << i + 1 << " differs from the reference " << path
                                    << " (bitwise, " << machine << ")";
    else
      ASSERT_NEAR(losses[i], want[i], i < 10 ? 1e-3 * std::fabs(want[i]) : 0.1)
          << key << ": step " << i + 1 << " (the reference was made on " << ref_machine << ", this is " << machine
          << ": relative 1e-3 for 10 steps, then 0.1 absolute)";
  }
  if (!bitwise)
    std::fprintf(stderr, "%s: reference made on %s, this is %s: compared loosely (no %s)\n", key.c_str(),
                 ref_machine.c_str(), machine.c_str(), own.filename().c_str());
}

}  // namespace

TEST(ReferenceLosses, DemoOnCpu) {
  fs::path dir = temp_dir("reference_demo");
  const std::string raw = (dir / "moby_dick.txt").string();
  ASSERT_EQ(std::system(("gunzip -c " + std::string(LINGUA_SOURCE_DIR) + "/data/demo/moby_dick.txt.gz > " + raw).c_str()), 0);
  auto [rc, out] = run_cli("prepare out_dir=" + (dir / "data").string() + " source=moby_dick val_fraction=0.02 " + raw);
  ASSERT_EQ(rc, 0) << out;
  TrainConfig c = parse_config<TrainConfig>({"config=" + std::string(LINGUA_SOURCE_DIR) + "/configs/demo.yaml",
                                             "dump_dir=" + (dir / "run").string(),
                                             "data.root_dir=" + (dir / "data").string(), "device=cpu", "threads=2",
                                             "steps=50", "logging.unigram_baseline_tokens=0", "eval.tasks=[]"});
  TrainResult r = train(c, {nullptr, true});
  record_or_check("demo_cpu", std::string("cpu/openblas:") + openblas_get_corename(),
                  "lingua train config=configs/demo.yaml device=cpu threads=2 steps=50", r.losses);
}

class ReferenceLossesCuda : public ::testing::TestWithParam<const char*> {};

TEST_P(ReferenceLossesCuda, Bench) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const std::string name = GetParam();
  TrainConfig c = parse_config<TrainConfig>({"config=" + std::string(LINGUA_SOURCE_DIR) + "/configs/" + name + ".yaml",
                                             "dump_dir=" + temp_dir("reference_" + name).string(), "bench.warmup=0",
                                             "bench.steps=" + std::to_string(kSteps)});
  BenchResult r = run_bench(c);
  record_or_check(name + "_cuda", "cuda/" + r.device,
                  "lingua bench config=configs/" + name + ".yaml bench.warmup=0 bench.steps=50", r.losses);
}

INSTANTIATE_TEST_SUITE_P(Configs, ReferenceLossesCuda,
                         ::testing::Values("bench_a", "bench_b", "bench_a_stem", "bench_a_stem_sparse"));
