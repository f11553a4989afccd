// Table parallelism (STEM tables split by columns over distributed.stem_parallel_size ranks), run
// by ctest under `mpirun -np 2` and, for the FourRanks cases, `-np 4` (two slice groups of two):
//  - all_to_all_tensor sends chunk q to rank q, on the host and NCCL communicators;
//  - each rank holds 1/P of every table's columns, and training with DDP or FSDP alongside gives
//    the gradients, weights, AdamW moments and evaluation loss of one process on the global batch,
//    dense and row-sparse, with gradient accumulation;
//  - with replicas (more ranks than P) the ranks holding the same slice stay bitwise equal.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "lingua/core/cuda.h"
#include "lingua/dist/ddp.h"
#include "lingua/dist/fsdp.h"
#include "lingua/dist/table_parallel.h"
#include "lingua/dist/mpi_test_util.h"
#include "lingua/dist/world.h"
#include "lingua/exec/testing.h"
#include "lingua/optim/optimizer.h"

using namespace lingua;
using namespace lingua::test_util;
using namespace lingua::mpi_test;

namespace {

TEST(Collectives, AllToAllSendsChunkQToRankQ) {
  for (Device dev : devices()) {
    Communicator& c = world().tensors(dev);
    const int r = c.rank(), n = c.size();
    const int64_t chunk = 5;  // odd
    // in chunk q of rank r: values 1000 r + 10 q + i; after: out chunk q = rank q's chunk r.
    std::vector<float> in((size_t)(chunk * n)), out(in.size(), -1.0f);
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < chunk; ++i) in[(size_t)(q * chunk + i)] = (float)(1000 * r + 10 * q + i);
    DeviceBuffer a, b;
    Tensor ti(in.data(), {chunk * n}), to(out.data(), {chunk * n});
    if (dev == Device::cuda) {
      a = DeviceBuffer(in.size() * 4);
      b = DeviceBuffer(in.size() * 4);
      copy_to_device(a.data(), in.data(), in.size() * 4);
      ti = Tensor(a.data(), {chunk * n}, DType::f32, dev);
      to = Tensor(b.data(), {chunk * n}, DType::f32, dev);
    }
    c.all_to_all_tensor(ti, to);
    c.wait_all();
    if (dev == Device::cuda) copy_tensor(Tensor(out.data(), {chunk * n}), to);
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < chunk; ++i)
        EXPECT_EQ(out[(size_t)(q * chunk + i)], (float)(1000 * q + 10 * r + i)) << device_name(dev);
  }
}

struct TableCase {
  bool fsdp = false, sparse = false;
  int micro = 1;
};

ModelConfig stem_model() { return small_dist_model("stem"); }

// Trains with the tables split over groups of P ranks (and DDP or FSDP over all of them) on this
// rank's share of a global batch, and in one executor on the whole batch; compares gradients every
// step, then weights, moments and an evaluation loss.
void check_tables(const TableCase& k, Device dev, int P) {
  Communicator& comm = world().tensors(dev);
  const int W = comm.size(), r = comm.rank();
  SCOPED_TRACE(std::string(device_name(dev)) + " tables over " + std::to_string(P) + " of " + std::to_string(W) +
               (k.fsdp ? ", FSDP" : ", DDP") + (k.sparse ? ", row-sparse" : "") + ", micro " + std::to_string(k.micro));
  std::unique_ptr<Communicator> slice_group = world().host().split(r / P, r % P);
  std::unique_ptr<Communicator> replicas = world().host().split(r % P, r / P);
  const int B = 2, T = 9, steps = 3;
  const ModelConfig cfg = stem_model();
  const ModelDims dims = resolve_dims(cfg, cfg.vocab_size);
  OptimConfig oc;
  oc.lr = 1e-2;
  oc.warmup = 0;
  oc.clip = 0.5;
  oc.stem.clip = 1e-3;  // the tables' norm (always clipped at this): the slices' part summed over the slice group
  oc.epsilon = 1e-6;
  oc.stem.sparse = k.sparse;
  ModelRun ref(cfg, dims, dev), run(cfg, dims, dev, [&](Transformer& m) {
    slice_tables(m, P, r % P);
    if (k.fsdp) shard_block_weights(m, W, r);
  });
  int sliced = 0;
  for (int id : run.params().ids()) {
    const ParamInfo& p = run.params().info(id);
    if (p.placement.kind != Placement::column_slice) continue;
    ++sliced;
    EXPECT_EQ(p.local_shape[1] * P, p.shape[1]) << p.name;
    EXPECT_EQ(run.params().host_param(id).size(), (size_t)(p.shape[0] * p.shape[1] / P)) << p.name << ": 1/P held";
  }
  EXPECT_EQ(sliced, cfg.n_layers - 1) << "one table per STEM layer (all but layer 0)";
  AdamW ref_opt(ref.params(), oc), opt(run.params(), oc);
  ParallelLayout layout;
  layout.world = W;
  layout.shard = k.fsdp ? W : 1;
  layout.replicate = k.fsdp ? 1 : W;
  layout.tables = P;
  std::unique_ptr<LayerHooks> dp = attach_data_parallel(layout, run.exec, opt, comm, k.micro);
  TableParallel tables(run.exec, opt, comm, P);
  for (int step = 0; step < steps; ++step) {
    global_batch_step(ref, ref_opt, run, opt, step, k.micro, W, r, B, T, cfg.vocab_size);
    const auto g = gather_full_values(world().host(), run.params(), true, slice_group.get());
    const auto gr = gather_full_values(world().host(), ref.params(), true);
    ASSERT_EQ(g.size(), gr.size());
    for (const auto& [name, x] : gr)
      EXPECT_LT(rel_diff(g.at(name), x), dev == Device::cpu ? 2e-5 : 2e-2) << "gradient of " << name << ", step " << step + 1;
    ref_opt.step(1.0);
    opt.step(1.0);
  }
  const auto w = gather_full_values(world().host(), run.params(), false, slice_group.get());
  const auto wr = gather_full_values(world().host(), ref.params(), false);
  for (const auto& [name, x] : wr)
    EXPECT_LT(rel_diff(w.at(name), x), dev == Device::cpu ? 1e-5 : 2e-2) << name << " after " << steps << " steps";
  // The ranks holding one slice hold it to the bit (the replicas' gradients were summed).
  for (int id : run.params().ids())
    if (run.params().info(id).placement.kind == Placement::column_slice)
      expect_same_in_group(*replicas, run.params().host_param(id), run.params().info(id).name + " (replicas)");
  // An evaluation forward looks the rows up across the group: the loss of one process.
  const std::vector<int32_t> tok = random_ids(W * B * T, cfg.vocab_size, 99), tgt = random_ids(W * B * T, cfg.vocab_size, 98);
  const LossSum lr = ref.exec.forward_loss(tok.data(), tgt.data(), W * B, T);
  const LossSum l = run.exec.forward_loss(tok.data(), tgt.data(), W * B, T);
  EXPECT_NEAR(l.nll / l.tokens, lr.nll / lr.tokens, dev == Device::cpu ? 1e-5 : 2e-2);
  // The full tables and their AdamW moments for a checkpoint: the reference's.
  const SplitValues sv = gather_sliced_values(*slice_group, run.params(), opt);
  EXPECT_EQ((int)sv.size(), sliced);
  for (const auto& [id, v] : sv) {
    const int rid = ref.params().index(run.params().info(id).name);
    EXPECT_LT(rel_diff(v.weights, ref.params().host_param(rid)), dev == Device::cpu ? 1e-5 : 2e-2);
    EXPECT_LT(rel_diff(v.m, ref_opt.host_m(rid)), dev == Device::cpu ? 1e-4 : 5e-2);
    EXPECT_LT(rel_diff(v.v, ref_opt.host_v(rid)), dev == Device::cpu ? 1e-4 : 5e-2);
  }
}

TEST(TableParallel, EqualsOneProcessOnTheGlobalBatch) {
  const int W = world().size();
  for (Device dev : devices()) {
    check_tables({}, dev, W);
    check_tables({.micro = 2}, dev, W);
    check_tables({.sparse = true}, dev, W);
    check_tables({.sparse = true, .micro = 2}, dev, W);
    check_tables({.fsdp = true}, dev, W);
    check_tables({.fsdp = true, .sparse = true, .micro = 2}, dev, W);
  }
}

TEST(TableParallel, RefusesTablesThatDoNotSplit) {
  ModelConfig cfg = stem_model();
  ModelRun dense([] {
    ModelConfig c = stem_model();
    c.ffn = "swiglu";
    return c;
  }(), resolve_dims(stem_model(), stem_model().vocab_size));
  try {
    slice_tables(dense.model, 2, 0);
    ADD_FAILURE() << "a model without tables was sliced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stem_parallel_size"), std::string::npos) << e.what();
  }
  Transformer model(cfg, resolve_dims(cfg, cfg.vocab_size));
  try {
    slice_tables(model, 7, 0);  // the STEM hidden size is no multiple of 7
    ADD_FAILURE() << "columns split in 7";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("columns"), std::string::npos) << e.what();
  }
}

TEST(TableParallel, FourRanksTwoSliceGroupsStayReplicas) {
  if (world().size() != 4) GTEST_SKIP() << "needs mpirun -np 4 (ctest's *_4ranks run)";
  for (Device dev : devices()) {
    check_tables({}, dev, 2);
    check_tables({.sparse = true, .micro = 2}, dev, 2);
    check_tables({.fsdp = true}, dev, 2);
  }
}

}  // namespace
