#pragma once
// Shared by the multi-process training tests (tests/test_mpi_*.cpp, under mpirun): directories and
// a corpus made by rank 0 and seen by every rank.
#include <filesystem>
#include <string>

#include "lingua/dist/world.h"
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

}  // namespace lingua::test_e2e
