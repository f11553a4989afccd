// Data parallelism across processes: run by ctest under `mpirun -np 2` (every rank runs every
// test, so each test calls the collectives in the same order on every rank). On the CPU through
// MPI; on CUDA through NCCL as well where GPUs are visible (the device tests).
//  - the communicators' host and tensor collectives give the expected values, the same on every rank;
//  - DDP over W ranks gives the gradients of one process on the global batch (every gradient,
//    within fp32 summation order), for dense and STEM models, tied and untied, with gradient
//    accumulation (one reduction per step) and gradients in the activation memory;
//  - after AdamW steps (dense and row-sparse) the weights match one process and are bitwise the
//    same on every rank;
//  - FSDP (block weights sharded over the ranks) gives the gradients and weights of one process
//    too, with gradient accumulation, tied weights, STEM tables and evaluation forwards.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"
#include "lingua/dist/ddp.h"
#include "lingua/dist/fsdp.h"
#include "lingua/dist/mpi_test_util.h"
#include "lingua/dist/world.h"
#include "lingua/exec/testing.h"
#include "lingua/optim/optimizer.h"

using namespace lingua;
using namespace lingua::test_util;
using namespace lingua::mpi_test;

namespace {

TEST(Collectives, HostValuesAgree) {
  Communicator& c = world().host();
  ASSERT_GE(c.size(), 2) << "run this test under mpirun -np 2 (ctest does)";
  const int r = c.rank(), n = c.size();
  double v[3] = {r + 1.0, r + 1.0, r + 1.0};
  c.all_reduce(v, 1, ReduceOp::sum);
  c.all_reduce(v + 1, 1, ReduceOp::max);
  c.all_reduce(v + 2, 1, ReduceOp::min);
  EXPECT_EQ(v[0], n * (n + 1) / 2.0);
  EXPECT_EQ(v[1], n);
  EXPECT_EQ(v[2], 1.0);
  const std::vector<std::string> s = c.all_gather_strings(std::string((size_t)r * 3 + 1, char('a' + r)));
  ASSERT_EQ((int)s.size(), n);
  for (int q = 0; q < n; ++q) EXPECT_EQ(s[q], std::string((size_t)q * 3 + 1, char('a' + q)));
  EXPECT_EQ(c.broadcast_string(r == 1 ? "from one" : "x", 1), "from one");
  c.barrier();
}

TEST(Collectives, TensorsSumOverRanks) {
  for (Device dev : devices()) {
    Communicator& c = world().tensors(dev);
    const int r = c.rank(), n = c.size();
    const int64_t len = 1001;  // odd
    std::vector<float> mine(len), all((size_t)(len * n));
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < len; ++i) all[(size_t)(q * len + i)] = std::sin(0.37f * (float)(i + 1) * (float)(q + 2));
    std::copy(all.begin() + r * len, all.begin() + (r + 1) * len, mine.begin());
    std::vector<float> got(len), gathered((size_t)(len * n)), scattered((size_t)(len / 1));
    DeviceBuffer d1, d2;
    auto on_dev = [&](std::vector<float>& h, DeviceBuffer& b) {
      if (dev == Device::cpu) return Tensor(h.data(), {(int64_t)h.size()});
      b = DeviceBuffer(h.size() * 4);
      copy_to_device(b.data(), h.data(), h.size() * 4);
      return Tensor(b.data(), {(int64_t)h.size()}, DType::f32, Device::cuda);
    };
    std::vector<float> work = mine;
    Tensor t = on_dev(work, d1);
    c.all_reduce_tensor(t);
    c.wait_all();
    copy_tensor(Tensor(got.data(), {len}), t);
    for (int64_t i = 0; i < len; ++i) {
      float want = 0;
      for (int q = 0; q < n; ++q) want += all[(size_t)(q * len + i)];
      ASSERT_NEAR(got[i], want, 1e-5) << device_name(dev) << " element " << i;
    }
    expect_same_on_every_rank(got, "all_reduce_tensor");
    // all_gather
    work = mine;
    Tensor in = on_dev(work, d1);
    std::vector<float> out_h((size_t)(len * n));
    Tensor out = on_dev(out_h, d2);
    c.all_gather_tensor(in, out);
    c.wait_all();
    copy_tensor(Tensor(gathered.data(), {len * n}), out);
    EXPECT_EQ(gathered, all) << device_name(dev);
    // reduce_scatter: chunk r of the sum
    std::vector<float> big((size_t)(len * n));
    for (size_t i = 0; i < big.size(); ++i) big[i] = (float)((i % 7) + r);
    Tensor bin = on_dev(big, d1);
    std::vector<float> small((size_t)len);
    Tensor bout = on_dev(small, d2);
    c.reduce_scatter_tensor(bin, bout);
    c.wait_all();
    copy_tensor(Tensor(scattered.data(), {len}), bout);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t g = r * len + i;
      ASSERT_EQ(scattered[i], (float)(n * (g % 7) + n * (n - 1) / 2)) << device_name(dev) << " element " << i;
    }
  }
}

struct DdpCase {
  bool tied = false, stem = false, grads_in_act = false, sparse = false, bf16_reduce = false;
  int micro = 1;
  const char* structured = nullptr;  // a structured FFN variant (2 blocks, rank 4) on layers 1 and 2
};

ModelConfig small_model(const DdpCase& k) {
  ModelConfig c = small_dist_model(k.structured ? k.structured : k.stem ? "stem" : "swiglu");
  c.weight_tying = k.tied;
  c.structured.nblocks = 2;
  c.structured.rank = 4;
  return c;
}

std::string describe(const DdpCase& k) {
  return std::string(k.tied ? " tied" : "") + (k.stem ? " stem" : "") +
         (k.structured ? std::string(" ") + k.structured : "") + (k.grads_in_act ? " grads-in-activations" : "") +
         (k.sparse ? " row-sparse" : "") + (k.bf16_reduce ? " bf16-reduce" : "") + " micro=" + std::to_string(k.micro);
}

// Trains `steps` AdamW steps with DDP over the world on this rank's share of a global batch, and
// the same steps in one executor on the whole global batch; compares the gradients of the first
// step and the weights after the last.
void check_ddp(const DdpCase& k, Device dev) {
  SCOPED_TRACE(std::string(device_name(dev)) + describe(k));
  Communicator& comm = world().tensors(dev);
  const int W = comm.size(), r = comm.rank();
  const int B = 2, T = 9, steps = 3;  // B sequences per rank per micro-batch
  const ModelConfig cfg = small_model(k);
  const ModelDims dims = resolve_dims(cfg, cfg.vocab_size);
  OptimConfig oc;
  oc.lr = 1e-2;
  oc.warmup = 0;
  oc.clip = 0.5;  // clipping reads the global norm: it must be the reduced gradients'
  oc.epsilon = 1e-6;  // (at 1e-8 a gradient element near 1e-8 turns rounding noise into lr-sized steps)
  oc.stem.sparse = k.sparse;
  ModelRun ref(cfg, dims, dev), run(cfg, dims, dev);
  run.exec.set_grads_in_activations(k.grads_in_act && k.micro == 1);
  AdamW ref_opt(ref.params(), oc), opt(run.params(), oc);
  DataParallel dp(run.exec, comm, k.bf16_reduce ? DType::bf16 : DType::f32);
  if (opt.row_sparse()) dp.reduce_also([&opt] { return opt.rows_seen(); });
  for (int step = 0; step < steps; ++step) {
    global_batch_step(ref, ref_opt, run, opt, step, k.micro, W, r, B, T, cfg.vocab_size);
    if (step == 0) {
      const std::vector<float> g = run.params().host_grads(), gr = ref.params().host_grads();
      EXPECT_LT(rel_diff(g, gr), dev == Device::cpu && !k.bf16_reduce ? 2e-6 : 2e-2) << "gradients of step 1";
      expect_same_on_every_rank(g, "gradients");
      if (k.bf16_reduce) {  // they came through bf16
        size_t exact = 0;
        for (float x : g) exact += round_to_bf16(x) == x;
        EXPECT_EQ(exact, g.size()) << "gradients that are not bf16 values after a bf16 reduction";
      }
    }
    ref_opt.step(1.0);
    opt.step(1.0);
  }
  int64_t stages_with_grads = 0;  // (placed by now, also in the activation memory)
  for (int s = 0; s < run.exec.n_stages(); ++s) stages_with_grads += run.exec.stage_grads(s).data != nullptr;
  EXPECT_EQ(stages_with_grads, run.exec.n_stages());
  // One reduction per stage per step, not per micro-batch (plus the rows seen, when row-sparse).
  EXPECT_EQ(dp.collectives(), steps * (stages_with_grads + (opt.row_sparse() ? 1 : 0)));
  const std::vector<float> w = run.params().host_values(), wr = ref.params().host_values();
  EXPECT_LT(rel_diff(w, wr), dev == Device::cpu && !k.bf16_reduce ? 1e-5 : 2e-2) << "weights after " << steps << " steps";
  expect_same_on_every_rank(w, "weights");
}

TEST(DataParallel, EqualsOneProcessOnTheGlobalBatch) {
  for (Device dev : devices()) {
    check_ddp({}, dev);
    check_ddp({.tied = true}, dev);
    check_ddp({.micro = 2}, dev);
    check_ddp({.micro = 3}, dev);
    check_ddp({.grads_in_act = true}, dev);
    check_ddp({.tied = true, .grads_in_act = true}, dev);
  }
}

// distributed.reduce_dtype bf16: the gradients travel as bf16 (every rank gets the same sum).
TEST(DataParallel, Bf16ReductionIsCloseAndTheSameOnEveryRank) {
  for (Device dev : devices()) {
    check_ddp({.bf16_reduce = true}, dev);
    check_ddp({.bf16_reduce = true, .micro = 2}, dev);
    check_ddp({.stem = true, .sparse = true, .bf16_reduce = true}, dev);
  }
}

TEST(DataParallel, StemTablesDenseAndRowSparse) {
  for (Device dev : devices()) {
    check_ddp({.stem = true}, dev);
    check_ddp({.stem = true, .micro = 2}, dev);
    check_ddp({.stem = true, .sparse = true}, dev);
    check_ddp({.stem = true, .sparse = true, .micro = 2}, dev);
  }
}

// The structured FFNs' factors (3-D block weights among them) reduce and shard like any weight.
TEST(DataParallel, StructuredFfns) {
  for (Device dev : devices())
    for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"}) check_ddp({.structured = ffn}, dev);
}

std::vector<float> flat(const std::map<std::string, std::vector<float>>& m) {
  std::vector<float> v;
  for (const auto& [name, x] : m) v.insert(v.end(), x.begin(), x.end());
  return v;
}

// As check_ddp, with the block weights sharded (FSDP; HSDP with shard groups of `shard` < W ranks)
// and no reference to DataParallel's counts.
void check_fsdp(const DdpCase& k, Device dev, int shard = 0) {
  Communicator& comm = world().tensors(dev);
  const int W = comm.size(), r = comm.rank();
  const int S = shard > 0 ? shard : W;
  SCOPED_TRACE(std::string(S < W ? "HSDP " : "FSDP ") + device_name(dev) + describe(k));
  // The host collectives of this rank's shard group (ranks replica * S + shard).
  std::unique_ptr<Communicator> group = S < W ? world().host().split(r / S, r % S) : nullptr;
  Communicator& host = group ? *group : world().host();
  const int B = 2, T = 9, steps = 3;
  const ModelConfig cfg = small_model(k);
  const ModelDims dims = resolve_dims(cfg, cfg.vocab_size);
  OptimConfig oc;
  oc.lr = 1e-2;
  oc.warmup = 0;
  oc.clip = 0.5;  // the global norm: the split parameters' part summed over the ranks
  oc.epsilon = 1e-6;  // (at 1e-8 a gradient element near 1e-8 turns rounding noise into lr-sized steps)
  oc.stem.sparse = k.sparse;
  ModelRun ref(cfg, dims, dev), run(cfg, dims, dev, [&](Transformer& m) { shard_block_weights(m, S, r % S); });
  int split = 0, matmul_weights = 0;
  for (int id : run.params().ids()) {
    split += run.params().info(id).placement.kind == Placement::flat_shard;
    const int stage = run.model.stage_of(id);
    matmul_weights += stage >= 1 && stage <= cfg.n_layers && run.params().info(id).compute_copy &&
                      run.params().info(id).shape.size() >= 2;  // [out, in] or [blocks, out, in]
  }
  EXPECT_EQ(split, matmul_weights) << "every block matmul weight is split";
  EXPECT_GE(split, cfg.n_layers * 6);  // wq wk wv wo w1 w2 (w3 in dense layers)
  run.exec.set_grads_in_activations(k.grads_in_act && k.micro == 1);
  AdamW ref_opt(ref.params(), oc), opt(run.params(), oc);
  ParallelLayout layout;
  layout.world = W;
  layout.shard = S;
  layout.replicate = W / S;
  std::unique_ptr<LayerHooks> fsdp = attach_data_parallel(layout, run.exec, opt, comm, k.micro);
  for (int step = 0; step < steps; ++step) {
    global_batch_step(ref, ref_opt, run, opt, step, k.micro, W, r, B, T, cfg.vocab_size);
    {
      const auto g = gather_full_values(host, run.params(), true), gr = gather_full_values(host, ref.params(), true);
      ASSERT_EQ(g.size(), gr.size());
      for (const auto& [name, x] : gr)
        EXPECT_LT(rel_diff(g.at(name), x), dev == Device::cpu ? (step == 0 ? 2e-6 : 2e-5) : 2e-2) << "gradient of " << name << ", step " << step + 1;
    }
    ref_opt.step(1.0);
    opt.step(1.0);
  }
  const auto w = gather_full_values(host, run.params(), false), wr = gather_full_values(host, ref.params(), false);
  for (const auto& [name, x] : wr)
    EXPECT_LT(rel_diff(w.at(name), x), dev == Device::cpu ? 1e-5 : 2e-2) << name << " after " << steps << " steps";
  expect_same_on_every_rank(flat(w), "gathered weights");
  // An evaluation forward gathers the updated weights: the loss of one process.
  const std::vector<int32_t> tok = random_ids(W * B * T, cfg.vocab_size, 99), tgt = random_ids(W * B * T, cfg.vocab_size, 98);
  const LossSum lr = ref.exec.forward_loss(tok.data(), tgt.data(), W * B, T);
  const LossSum l = run.exec.forward_loss(tok.data(), tgt.data(), W * B, T);
  EXPECT_NEAR(l.nll / l.tokens, lr.nll / lr.tokens, dev == Device::cpu ? 1e-5 : 2e-2);
  // The split weights' AdamW moments, gathered for a checkpoint: the reference's.
  const SplitValues sv = gather_split_values(host, run.params(), opt);
  EXPECT_EQ((int)sv.size(), split);
  for (const auto& [id, v] : sv) {
    const int rid = ref.params().index(run.params().info(id).name);
    EXPECT_LT(rel_diff(v.weights, ref.params().host_param(rid)), dev == Device::cpu ? 1e-5 : 2e-2);
    EXPECT_LT(rel_diff(v.m, ref_opt.host_m(rid)), dev == Device::cpu ? 1e-4 : 5e-2);
    // Every shard group (every replica) holds the same weights and moments, to the bit.
    std::vector<float> both = v.weights;
    both.insert(both.end(), v.m.begin(), v.m.end());
    expect_same_on_every_rank(both, "gathered split weights and moments");
  }
}

TEST(FullyShardedDataParallel, EqualsOneProcessOnTheGlobalBatch) {
  for (Device dev : devices()) {
    check_fsdp({}, dev);
    check_fsdp({.tied = true}, dev);
    check_fsdp({.micro = 2}, dev);
    check_fsdp({.grads_in_act = true}, dev);
    check_fsdp({.micro = 3}, dev);
  }
}

TEST(FullyShardedDataParallel, StructuredFfns) {
  for (Device dev : devices())
    for (const char* ffn : {"lowrank", "blockdense", "blockshuffle"}) {
      check_fsdp({.structured = ffn}, dev);
      check_fsdp({.micro = 2, .structured = ffn}, dev);
    }
}

TEST(FullyShardedDataParallel, StemTables) {
  for (Device dev : devices()) {
    check_fsdp({.stem = true}, dev);
    check_fsdp({.stem = true, .sparse = true, .micro = 2}, dev);
  }
}

// ---- Four ranks (ctest runs these again under mpirun -np 4, filtered on FourRanks) ----

#define REQUIRE_FOUR_RANKS()                                                              \
  if (world().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)"

TEST(Collectives, FourRanksSplitGroups) {
  REQUIRE_FOUR_RANKS();
  Communicator& h = world().host();
  const int r = h.rank();
  // Shard groups {0,1} {2,3}; replica groups {0,2} {1,3}; a reversed key orders {3,1} {2,0}... ;
  // the MPI split and the generic one (over the parent's all_gather) both.
  for (int generic = 0; generic < 2; ++generic) {
    SCOPED_TRACE(generic ? "generic split" : "backend split");
    auto split = [&](int color, int key) { return generic ? h.Communicator::split(color, key) : h.split(color, key); };
    std::unique_ptr<Communicator> shard = split(r / 2, r % 2), replica = split(r % 2, -(r / 2));
    EXPECT_EQ(shard->size(), 2);
    EXPECT_EQ(shard->rank(), r % 2);
    EXPECT_EQ(replica->rank(), 1 - r / 2) << "ranked by key (negated: reversed)";
    double v = r + 1;
    shard->all_reduce(&v, 1, ReduceOp::sum);
    EXPECT_EQ(v, r / 2 == 0 ? 3.0 : 7.0);
    v = r + 1;
    replica->all_reduce(&v, 1, ReduceOp::max);
    EXPECT_EQ(v, r % 2 == 0 ? 3.0 : 4.0);
    int got[2] = {-1, -1};
    replica->all_gather(&r, got, sizeof r);
    EXPECT_EQ(got[0], r % 2 + 2);  // key order: the rank of replica 1 first
    EXPECT_EQ(got[1], r % 2);
    EXPECT_EQ(shard->broadcast_string("from " + std::to_string(r), 1), "from " + std::to_string(r / 2 * 2 + 1));
    shard->barrier();
    // CPU tensor collectives inside a group.
    std::vector<float> t{(float)r, 0.5f * (float)r, 1.0f};
    shard->all_reduce_tensor(Tensor(t.data(), {3}));
    EXPECT_EQ(t[0], (float)(r / 2 * 4 + 1));
    EXPECT_EQ(t[2], 2.0f);
  }
  // The tensor communicators split too (NCCL's on the GPUs).
  for (Device dev : devices()) {
    Communicator& c = world().tensors(dev);
    std::unique_ptr<Communicator> shard = c.split(r / 2, r % 2), replica = c.split(r % 2, r / 2);
    const int64_t n = 7;
    std::vector<float> mine(n), all(2 * n), sum(n);
    for (int64_t i = 0; i < n; ++i) mine[(size_t)i] = std::sin(0.3f * (float)(i + 1) * (float)(r + 1));
    DeviceBuffer a, b;
    auto put = [&](std::vector<float>& h2, DeviceBuffer& buf) {
      if (dev == Device::cpu) return Tensor(h2.data(), {(int64_t)h2.size()});
      buf = DeviceBuffer(h2.size() * 4);
      copy_to_device(buf.data(), h2.data(), h2.size() * 4);
      return Tensor(buf.data(), {(int64_t)h2.size()}, DType::f32, Device::cuda);
    };
    std::vector<float> work = mine;
    Tensor in = put(work, a), out = put(all, b);
    shard->all_gather_tensor(in, out);  // queued, then the replica sum on the same stream
    replica->all_reduce_tensor(in);
    shard->wait_all();
    replica->wait_all();
    copy_tensor(Tensor(all.data(), {2 * n}), out);
    copy_tensor(Tensor(sum.data(), {n}), in);
    const int pair = r / 2 * 2, other = (r + 2) % 4;
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(all[(size_t)i], std::sin(0.3f * (float)(i + 1) * (float)(pair + 1))) << device_name(dev);
      EXPECT_EQ(all[(size_t)(n + i)], std::sin(0.3f * (float)(i + 1) * (float)(pair + 2))) << device_name(dev);
      EXPECT_NEAR(sum[(size_t)i], mine[(size_t)i] + std::sin(0.3f * (float)(i + 1) * (float)(other + 1)), 1e-6)
          << device_name(dev);
    }
  }
}

TEST(HybridShardedDataParallel, FourRanksEqualsOneProcessOnTheGlobalBatch) {
  REQUIRE_FOUR_RANKS();
  for (Device dev : devices()) {
    check_fsdp({}, dev, 2);
    check_fsdp({.tied = true}, dev, 2);
    check_fsdp({.micro = 2}, dev, 2);
    check_fsdp({.grads_in_act = true}, dev, 2);
    check_fsdp({.stem = true, .sparse = true, .micro = 2}, dev, 2);
    check_fsdp({.structured = "blockshuffle"}, dev, 2);
  }
}

TEST(FullyShardedDataParallel, FourRanksEqualsOneProcessOnTheGlobalBatch) {
  REQUIRE_FOUR_RANKS();
  for (Device dev : devices()) {
    check_fsdp({}, dev);
    check_fsdp({.micro = 2}, dev);
  }
}

}  // namespace
