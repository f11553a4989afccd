// Profiler: nesting, leaves, the per-op summary (layer numbers folded) and the Chrome trace file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "lingua/core/cuda.h"
#include "lingua/core/profiler.h"

using namespace lingua;

namespace {
void busy(int us) {
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(us)) {
  }
}

std::vector<ProfileEvent> record(Device dev) {
  Profiler::instance().start(dev);
  for (int step = 0; step < 2; ++step) {
    ProfileScope s("step");
    for (int l = 0; l < 3; ++l) {
      ProfileScope layer("layers." + std::to_string(l));
      LINGUA_PROFILE_SCOPE("matmul");
      busy(200);
    }
    LINGUA_PROFILE_SCOPE("optimizer");
  }
  return Profiler::instance().stop();
}
}  // namespace

TEST(Profiler, InactiveScopesRecordNothing) {
  EXPECT_FALSE(profiling_active());
  { LINGUA_PROFILE_SCOPE("ignored"); }
  Profiler::instance().start(Device::cpu);
  auto ev = Profiler::instance().stop();
  EXPECT_TRUE(ev.empty());
}

TEST(Profiler, NestingLeavesAndSummary) {
  auto ev = record(Device::cpu);
  ASSERT_EQ(ev.size(), 2u * (1 + 3 * 2 + 1));
  EXPECT_EQ(ev[0].path, "step");
  EXPECT_FALSE(ev[0].leaf);
  EXPECT_EQ(ev[2].path, "step/layers.0/matmul");
  EXPECT_TRUE(ev[2].leaf);
  EXPECT_EQ(ev[2].depth, 2);
  EXPECT_GE(ev[2].dur_us, 150);
  EXPECT_GE(ev[1].dur_us, ev[2].dur_us);  // a scope contains its children
  EXPECT_GE(ev[2].start_us, ev[1].start_us);
  std::string s = profile_summary(ev, 2);
  EXPECT_NE(s.find("step/layers.N/matmul"), std::string::npos) << s;
  EXPECT_EQ(s.find("layers.1"), std::string::npos) << s;
  EXPECT_NE(s.find("step/optimizer"), std::string::npos) << s;
}

TEST(Profiler, ChromeTraceIsValidJson) {
  auto ev = record(Device::cpu);
  auto path = std::filesystem::temp_directory_path() / ("lingua_profile_" + std::to_string(getpid())) / "t.json";
  write_chrome_trace(path.string(), ev);
  std::ifstream f(path);
  auto j = nlohmann::json::parse(f);
  ASSERT_EQ(j["traceEvents"].size(), ev.size());
  EXPECT_EQ(j["traceEvents"][2]["name"], "matmul");
  EXPECT_EQ(j["traceEvents"][2]["ph"], "X");
  EXPECT_EQ(j["traceEvents"][2]["args"]["path"], "step/layers.0/matmul");
  std::filesystem::remove_all(path.parent_path());
}

TEST(ProfilerCuda, DeviceEventsNestAndCount) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  auto ev = record(Device::cuda);
  ASSERT_EQ(ev.size(), 16u);
  for (const auto& e : ev) EXPECT_GE(e.dur_us, 0);
  EXPECT_GE(ev[1].dur_us + 1e-3, ev[2].dur_us);
}
