#include "lingua/train/bench.h"

#include <chrono>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lingua/core/cuda.h"
#include "lingua/core/philox.h"
#include "lingua/dist/fsdp.h"
#include "lingua/dist/table_parallel.h"
#include "lingua/dist/layout.h"
#include "lingua/dist/world.h"
#include "lingua/exec/executor.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/transformer.h"
#include "lingua/optim/optimizer.h"
#include "lingua/optim/schedule.h"
#include "lingua/train/step_profiler.h"
#include "lingua/train/train_step.h"
#include "lingua/train/trainer.h"

namespace lingua {

std::string BenchResult::json(const TrainConfig& cfg) const {
  char date[32];
  std::time_t t = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&t));
  nlohmann::json j = {{"impl", impl},
                      {"config", cfg.bench.config_name},
                      {"device", device},
                      {"date", date},
                      {"dim", cfg.model.dim},
                      {"layers", cfg.model.n_layers},
                      {"heads", cfg.model.n_heads},
                      {"kv", cfg.model.n_kv_heads.value_or(cfg.model.n_heads)},
                      {"vocab", cfg.model.vocab_size},
                      {"seq", cfg.data.seq_len},
                      {"bsz", cfg.data.batch_size},
                      {"grad_acc", cfg.grad_acc_steps},
                      {"ffn", cfg.model.ffn},
                      {"total_params", total_params},
                      {"active_params", active_params},
                      {"step_ms", step_ms},
                      {"tokens_per_s", tokens_per_s},
                      {"mfu", mfu},
                      {"peak_mem_gib", peak_mem_gib},
                      {"loss", loss},
                      {"gpus", gpus},
                      {"dist", dist}};
  if (!ffn_layers.empty()) j["ffn_layers"] = ffn_layers;
  if (cfg.distributed.stem_parallel_size > 1 && gpus > 1) j["stem_parallel_size"] = cfg.distributed.stem_parallel_size;
  if (cfg.distributed.reduce_dtype != "fp32" && dist == "ddp") j["reduce_dtype"] = cfg.distributed.reduce_dtype;
  if (cfg.bench.tokens == "global") j["losses"] = losses;  // (the curve, for comparing layouts)
  for (auto& [g, sparse] : row_sparse_groups) j["row_sparse_" + g] = sparse;
  return j.dump();
}

BenchResult run_bench(const TrainConfig& cfg) {
  LINGUA_CHECK(cfg.model.vocab_size > 0, "lingua bench needs model.vocab_size (random tokens, no tokenizer)");
  Device dev = resolve_device(cfg.device);
  check_ffn_config(cfg.model, &cfg.optim);
  // Under a launcher: data parallel over its processes (weak scaling, B x T tokens per process),
  // sharded as distributed.* says.
  World& world = process_world();
  const int W = world.size();
  const ParallelLayout layout = resolve_parallel_layout(cfg.distributed, W);
  if (dev == Device::cuda) select_local_gpu(world);
  ModelDims dims = resolve_dims(cfg.model, cfg.model.vocab_size);
  Transformer model(cfg.model, dims);
  if (layout.fsdp()) shard_block_weights(model, layout.shard, layout.shard_rank(world.rank()));
  if (layout.tables > 1) slice_tables(model, layout.tables, world.rank() % layout.tables);
  model.to_device(dev);
  Executor exec(model);
  exec.set_grads_in_activations(cfg.model.grads_in_activations && cfg.grad_acc_steps == 1);
  std::unique_ptr<AdamW> opt_owner = make_optimizer(model, cfg.optim);
  AdamW& opt = *opt_owner;
  std::unique_ptr<LayerHooks> parallel = attach_data_parallel(layout, exec, opt, world.tensors(dev), cfg.grad_acc_steps);
  std::unique_ptr<TableParallel> table_parallel =
      layout.tables > 1 ? std::make_unique<TableParallel>(exec, opt, world.tensors(dev), layout.tables) : nullptr;
  const int B = cfg.data.batch_size, T = cfg.data.seq_len;
  LINGUA_CHECK(T <= dims.max_seqlen, "data.seq_len (", T, ") exceeds model.max_seqlen (", dims.max_seqlen, ")");
  // Random tokens, as the anchor: uniform ids, fixed for the run; per process, or (global) row g
  // of the global batch from a stream of its own, this process holding rows [rank B, rank B + B).
  const bool global = cfg.bench.tokens == "global";
  std::vector<int32_t> tok((size_t)B * T), tgt((size_t)B * T);
  if (!global) {
    PhiloxStream rng((uint64_t)cfg.seed, 0xBE7C + (uint64_t)world.rank());
    for (auto& x : tok) x = (int32_t)rng.below(dims.vocab);
    for (auto& x : tgt) x = (int32_t)rng.below(dims.vocab);
  } else {
    for (int i = 0; i < B; ++i) {
      PhiloxStream rng((uint64_t)cfg.seed, 0xB10C0000ull + (uint64_t)world.rank() * B + i);
      for (int t = 0; t < T; ++t) tok[(size_t)i * T + t] = (int32_t)rng.below(dims.vocab);
      for (int t = 0; t < T; ++t) tgt[(size_t)i * T + t] = (int32_t)rng.below(dims.vocab);
    }
  }
  const float scale = 1.0f / ((float)B * T * cfg.grad_acc_steps * W);
  double loss = 0;
  std::vector<double> losses;
  TrainStep train_step(exec, opt, cfg.cuda_graph);
  const std::vector<MicroBatch> micro(cfg.grad_acc_steps, MicroBatch{tok.data(), tgt.data(), B, T});
  auto step = [&](int64_t s) {
    LossSum l = train_step.run(micro, scale, lr_multiplier(cfg.optim, s, cfg.bench.warmup + cfg.bench.steps));
    loss = l.nll / l.tokens;  // (rank 0's tokens: no extra collective in the timed loop) ...
    if (global) loss = world.host().all_reduce(loss, ReduceOp::sum) / W;  // ... but for curves
    losses.push_back(loss);
  };
  for (int64_t s = 0; s < cfg.bench.warmup; ++s) step(s);
  cuda_synchronize_if(dev);
  world.host().barrier();
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < cfg.bench.steps; ++s) step(cfg.bench.warmup + s);
  cuda_synchronize_if(dev);
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / cfg.bench.steps;
  dt = world.host().all_reduce(dt, ReduceOp::max);  // the slowest rank's step

  BenchResult r;
  r.impl = "lingua.cpp";
  r.device = dev == Device::cuda ? cuda_device_name() : "cpu";
  r.gpus = W;
  r.dist = layout.hybrid() ? "hsdp" : layout.fsdp() ? "fsdp" : W > 1 ? "ddp" : "none";
  ParamCounts pc = model.param_counts();
  r.total_params = pc.total;
  r.ffn_layers = model.describe_ffn();
  for (const ParamGroup& g : opt.groups())
    if (g.name != "default") r.row_sparse_groups[g.name] = g.hyper.rows_by_input_ids;
  r.active_params = pc.active_non_embedding;
  r.step_ms = dt * 1e3;
  r.tokens_per_s = (double)B * T * cfg.grad_acc_steps * W / dt;  // summed over the processes
  r.mfu = r.tokens_per_s / W * model.flops_per_token(T) / 989e12;  // per GPU
  r.peak_mem_gib = dev == Device::cuda ? cuda_peak_memory() / double(1 << 30)
                                       : (double)exec.host_training_bytes() / double(1 << 30);
  r.peak_mem_gib = world.host().all_reduce(r.peak_mem_gib, ReduceOp::max);  // the largest per GPU
  r.loss = loss;
  r.losses = losses;
  // Profiled steps come after the timed ones, so that recording does not perturb the timing.
  if (cfg.profiling.run) {  // every rank runs the steps (collectives); rank 0 records them
    ProfilingConfig pc = cfg.profiling;
    pc.profile_warmup = 0;
    pc.run = world.rank() == 0;
    const int64_t s0 = cfg.bench.warmup + cfg.bench.steps;
    StepProfiler prof(pc, cfg.dump_dir, dev, s0);
    for (int64_t s = s0; s < s0 + pc.profile_steps; ++s) {
      prof.before_step(s);
      step(s);
      prof.after_step(s + 1);
    }
    r.profile = prof.summary();
    r.trace_path = prof.trace_path();
  }
  if (!cfg.bench.out.empty() && world.rank() == 0) {
    std::ofstream f(cfg.bench.out, std::ios::app);
    LINGUA_CHECK(f.good(), "cannot append to ", cfg.bench.out);
    f << r.json(cfg) << "\n";
  }
  return r;
}

}  // namespace lingua
