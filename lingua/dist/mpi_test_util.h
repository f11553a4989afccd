#pragma once
// Helpers of the multi-process tests (test_mpi_*.cpp, run under mpirun): the process world, the
// devices to test on, the model they train, and comparisons across ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "lingua/core/cuda.h"
#include "lingua/dist/world.h"
#include "lingua/exec/testing.h"
#include "lingua/optim/optimizer.h"

namespace lingua::mpi_test {

inline World& world() { return process_world(); }

// The tiny model the multi-process tests train: 3 layers 16 wide, GQA, depth-scaled init, the FFN
// variant `ffn`.
inline ModelConfig small_dist_model(const std::string& ffn) {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = 3;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.multiple_of = 8;
  c.vocab_size = 37;
  c.max_seqlen = 16;
  c.init_std_factor = "current_depth";
  c.seed = 11;
  c.ffn = ffn;
  return c;
}

// CUDA cases run only with a GPU per local rank (NCCL needs one each); the process then uses its own.
inline bool have_gpu() {
  static const bool gpu = [] {
    if (cuda_device_count() == 0) return false;
    if (cuda_device_count() < world().env().local_size) {
      if (world().rank() == 0)
        std::fprintf(stderr, "CUDA cases skipped: %d ranks on this node, %d GPU(s)\n", world().env().local_size,
                     cuda_device_count());
      return false;
    }
    select_local_gpu(world());
    return true;
  }();
  return gpu;
}

inline std::vector<Device> devices() {
  std::vector<Device> d{Device::cpu};
  if (have_gpu()) d.push_back(Device::cuda);
  return d;
}

inline uint64_t fnv(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  return h;
}

// Every rank of `c` holds the same bytes.
inline void expect_same_in_group(Communicator& c, const std::vector<float>& v, const std::string& what) {
  const uint64_t h = fnv(v.data(), v.size() * sizeof(float));
  std::vector<uint64_t> all(c.size());
  c.all_gather(&h, all.data(), sizeof h);
  for (int r = 1; r < c.size(); ++r) EXPECT_EQ(all[r], all[0]) << what << ": rank " << r << " of its group differs";
}
inline void expect_same_on_every_rank(const std::vector<float>& v, const std::string& what) {
  expect_same_in_group(world().host(), v, what);
}

// ||a - b|| / ||b||
inline double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    num += (double)(a[i] - b[i]) * (a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// One step's gradients (zeroed first), `micro` micro-batches: `ref`, one process, on each global
// micro-batch [W * B, T] of random ids; `run`, this rank r of W, on its rows [r * B, (r + 1) * B).
// Both optimizers observe their ids (row-sparse groups). The loss scale makes it the global mean.
inline void global_batch_step(test_util::ModelRun& ref, AdamW& ref_opt, test_util::ModelRun& run, AdamW& opt,
                              int step, int micro, int W, int r, int B, int T, int vocab) {
  const float scale = (float)(1.0 / ((double)micro * W * B * T));
  ref.exec.zero_grads();
  run.exec.zero_grads();
  for (int m = 0; m < micro; ++m) {
    const uint32_t seed = 1000u * step + 17u * m + 5u;
    const std::vector<int32_t> tok = test_util::random_ids(W * B * T, vocab, seed);
    const std::vector<int32_t> tgt = test_util::random_ids(W * B * T, vocab, seed + 1);
    ref.exec.stage_batch(m, tok.data(), tgt.data(), W * B, T);
    ref_opt.observe_input_ids(ref.exec.staged_tokens(m), m == 0);
    ref.exec.forward_backward_staged(m, scale, m == micro - 1);
    run.exec.stage_batch(m, tok.data() + r * B * T, tgt.data() + r * B * T, B, T);
    opt.observe_input_ids(run.exec.staged_tokens(m), m == 0);
    run.exec.forward_backward_staged(m, scale, m == micro - 1);
  }
}

}  // namespace lingua::mpi_test
