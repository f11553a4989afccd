#pragma once
// Shared by the multi-process training tests (tests/test_mpi_*.cpp, under mpirun): directories and
// a corpus made by rank 0 and seen by every rank.
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "lingua/dist/world.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace lingua::test_e2e {

inline Communicator& host() { return process_world().host(); }

// A directory made by rank 0 and shared by every rank.
inline fs::path shared_dir(const std::string& name) {
  std::string p = host().rank() == 0 ? temp_dir(name).string() : "";
  return host().broadcast_string(p, 0);
}

inline fs::path shared_corpus(const std::string& name) {
  std::string p = host().rank() == 0 ? make_corpus(name).string() : "";
  p = host().broadcast_string(p, 0);
  host().barrier();
  return p;
}

// The run `c` in a new shared dump_dir `name`, stopped after step k (a crash: no checkpoint beyond
// the regular ones; c checkpoints every step) and started again, resumes from step k and finishes
// with the losses of the uninterrupted run `whole`, bitwise.
inline void expect_resumes_bitwise_after(TrainConfig c, const TrainResult& whole, int k, const std::string& name) {
  c.dump_dir = shared_dir(name).string();
  ASSERT_EQ(train(c, {[k](int64_t step) { return step < k; }, true}).final_step, k);
  const TrainResult rest = train(c, {nullptr, true});
  ASSERT_EQ(rest.start_step, k);
  for (size_t i = 0; i < rest.losses.size(); ++i)
    EXPECT_EQ(rest.losses[i], whole.losses[k + i]) << "stopped at " << k << ", step " << k + i + 1;
}

}  // namespace lingua::test_e2e
