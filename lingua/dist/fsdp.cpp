#include "lingua/dist/fsdp.h"

#include <algorithm>

#include "lingua/dist/ddp.h"
#include "lingua/dist/table_parallel.h"

namespace lingua {

namespace {
constexpr int64_t kAlign = 64;  // elements: every gathered tensor starts 128-byte aligned (bf16)
int64_t align_up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

Tensor full_shape(void* data, const ParamInfo& p, DType dt, Device dev) {
  Tensor t;
  t.data = data;
  t.ndim = (int)p.shape.size();
  for (int d = 0; d < t.ndim; ++d) t.shape[d] = p.shape[d];
  t.dtype = dt;
  t.device = dev;
  return t;
}
}  // namespace

void shard_block_weights(Transformer& model, int size, int rank) {
  ParamStore& s = model.params();
  LINGUA_CHECK(s.device() == Device::cpu, "internal error: shard_block_weights before the model moves to the GPU");
  if (size == 1) return;
  const std::vector<int> ids = s.ids();  // (set_placement lays the store out again)
  for (int id : ids) {
    const int stage = model.stage_of(id);
    const ParamInfo& p = s.info(id);
    if (stage >= 1 && stage <= model.n_layers() && p.compute_copy && p.shape.size() >= 2)  // matmul weights
      s.set_placement(id, Placement::FlatShard(size, rank));
  }
}

SplitValues gather_split_values(Communicator& comm, const ParamStore& store, const AdamW& opt) {
  SplitValues out;
  for (int id : store.ids()) {
    const ParamInfo& p = store.info(id);
    if (p.placement.kind != Placement::flat_shard) continue;  // (column slices: gather_sliced_values)
    LINGUA_CHECK(p.placement.size == comm.size(), "internal error: gathering parameter '", p.name, "' split over ",
                 p.placement.size, " of ", comm.size(), " processes");
    // Flat shards are consecutive chunks of the row-major values: gathered in rank order, then
    // the padding cut off.
    auto gather = [&](const std::vector<float>& local) {
      std::vector<float> all((size_t)(p.numel * comm.size()));
      comm.all_gather(local.data(), all.data(), local.size() * sizeof(float));
      all.resize((size_t)p.full_numel());
      return all;
    };
    FullValues& v = out[id];
    v.weights = gather(store.host_param(id));
    if (p.grad_offset >= 0) {
      v.m = gather(opt.host_m(id));
      v.v = gather(opt.host_v(id));
    }
  }
  return out;
}

std::map<std::string, std::vector<float>> gather_full_values(Communicator& host, const ParamStore& s, bool grads,
                                                             Communicator* slice_group) {
  std::map<std::string, std::vector<float>> out;
  for (int id : s.ids()) {
    const ParamInfo& p = s.info(id);
    if (grads && p.grad_offset < 0) continue;
    std::vector<float> local((size_t)p.numel);
    copy_tensor(Tensor(local.data(), {p.numel}), grads ? s.local_grad(id) : s.local_param(id));
    if (p.placement.kind == Placement::column_slice) {
      LINGUA_CHECK(slice_group, "internal error: gathering the column-sliced '", p.name, "' without its group");
      local = gather_column_slices(*slice_group, p, local);
    } else if (p.placement.kind != Placement::whole) {
      LINGUA_CHECK(p.placement.kind == Placement::flat_shard && p.placement.size == host.size(),
                   "internal error: gathering parameter '", p.name, "' split over ", p.placement.size, " of ",
                   host.size(), " processes");
      std::vector<float> all(local.size() * (size_t)host.size());
      host.all_gather(local.data(), all.data(), local.size() * sizeof(float));
      all.resize((size_t)p.full_numel());
      local.swap(all);
    }
    out[p.name] = std::move(local);
  }
  return out;
}

FullyShardedDataParallel::FullyShardedDataParallel(Executor& exec, AdamW& opt, Communicator& comm, int grad_acc_steps,
                                                   int shard_size)
    : exec_(exec), opt_(opt), world_comm_(comm), comm_(&comm), rotate_grads_(grad_acc_steps == 1) {
  if (shard_size > 0 && shard_size < comm.size()) {
    LINGUA_CHECK(comm.size() % shard_size == 0, "HSDP: shard groups of ", shard_size, " do not divide ", comm.size(),
                 " ranks");
    // rank = replica * S + shard (ParallelLayout)
    shard_owned_ = comm.split(comm.rank() / shard_size, comm.rank() % shard_size);
    replica_ = comm.split(comm.rank() % shard_size, comm.rank() / shard_size);
    comm_ = shard_owned_.get();
  }
  LINGUA_CHECK(comm.device() == exec.device() || comm_->size() == 1, "sharded data parallelism: the communicator (",
               comm.backend(), ") is for ", device_name(comm.device()), " tensors, the model is on ",
               device_name(exec.device()));
  lay_out();
  opt_.set_split_norm_reducer([this](double* sq) { comm_->all_reduce_device_doubles(sq, 1); });
  exec_.add_hooks(this);
}

// The blocks' split and whole parameters, the gathered-weight and gradient buffers, and the
// modules' views of the gathered weights: at construction, and again when the parameters change
// (a model feature's guides dropped), between steps.
void FullyShardedDataParallel::lay_out() {
  Transformer& model = exec_.model();
  ParamStore& s = model.params();
  const int W = comm_->size(), L = model.n_layers();
  blocks_.assign(L, BlockShards());
  issued_.clear();
  for (int id : s.ids()) {
    const ParamInfo& p = s.info(id);
    const int stage = model.stage_of(id);
    if (stage < 1 || stage > L) continue;
    BlockShards& b = blocks_[stage - 1];
    if (p.placement.kind == Placement::flat_shard) {
      LINGUA_CHECK(p.placement.size == W && p.placement.rank == comm_->rank(), "parameter '", p.name,
                   "' is split over ", p.placement.size, " ranks (rank ", p.placement.rank, "), the shard group has ", W,
                   " (rank ", comm_->rank(), ")");
      b.split.push_back({id, p.numel, b.size});
      b.size += align_up(W * p.numel);
    } else if (p.grad_offset >= 0 && p.placement.kind == Placement::whole) {  // (column slices: table_parallel.h)
      b.whole.push_back(id);
    }
  }
  int64_t gathered = 0, grads = 0, largest = 0;
  for (const BlockShards& b : blocks_) {
    gathered += b.size;
    largest = std::max(largest, b.size);
  }
  grads = rotate_grads_ ? 2 * largest : gathered;
  const Device dev = exec_.device();
  const DType compute = dev == Device::cuda ? DType::bf16 : DType::f32;
  if (dev == Device::cuda) {
    gathered_dev_ = DeviceBuffer(std::max<int64_t>(gathered, 1) * 2);
    grads_dev_ = DeviceBuffer(std::max<int64_t>(grads, 1) * 4);
    grads_dev_.zero();
  } else {
    gathered_host_.assign(gathered, 0.0f);
    grads_host_.assign(grads, 0.0f);
  }
  // Modules read the gathered weights from here on; gradient views are set per backward. A block's
  // elements are relative to its own buffers: gathered at b.split[i].at, gradients at
  // (b.split[i].at - block base) in its gradient slot.
  int64_t base = 0;
  for (BlockShards& b : blocks_) {
    for (Split& sp : b.split) {
      sp.at += base;
      char* at = dev == Device::cuda ? gathered_dev_.as<char>() + sp.at * 2
                                     : reinterpret_cast<char*>(gathered_host_.data() + sp.at);
      s.set_full_views(sp.id, full_shape(at, s.info(sp.id), compute, dev), Tensor());
    }
    base += b.size;
  }
  layout_epoch_ = s.layout_epoch();
}

FullyShardedDataParallel::~FullyShardedDataParallel() {
  exec_.remove_hooks(this);
  opt_.set_split_norm_reducer([](double*) {});
}

size_t FullyShardedDataParallel::buffer_bytes() const {
  return gathered_dev_.bytes() + grads_dev_.bytes() + (gathered_host_.size() + grads_host_.size()) * sizeof(float);
}

void FullyShardedDataParallel::gather(int layer) {
  ParamStore& s = exec_.model().params();
  BlockShards& b = blocks_[layer];
  issued_[layer] = true;
  if (b.split.empty()) return;
  const Device dev = exec_.device();
  comm_->begin_group();
  for (const Split& sp : b.split) {
    const Tensor local = dev == Device::cuda ? s.local_bf16(sp.id) : s.local_param(sp.id);
    const Tensor in(local.data, {sp.chunk}, local.dtype, dev);
    const Tensor out(dev == Device::cuda ? gathered_dev_.as<char>() + sp.at * 2
                                         : reinterpret_cast<char*>(const_cast<float*>(gathered_host_.data()) + sp.at),
                     {sp.chunk * comm_->size()}, local.dtype, dev);
    comm_->all_gather_tensor(in, out);
  }
  comm_->end_group();
  b.gathered = comm_->mark();
}

Tensor FullyShardedDataParallel::grad_slot(int layer) const {
  // With rotation, blocks of one parity share a slot; otherwise each block has its own.
  int64_t at = 0, n = blocks_[layer].size;
  if (rotate_grads_) {
    int64_t largest = 0;
    for (const BlockShards& b : blocks_) largest = std::max(largest, b.size);
    at = (layer % 2) * largest;
  } else {
    for (int l = 0; l < layer; ++l) at += blocks_[l].size;
  }
  float* base = exec_.device() == Device::cuda ? grads_dev_.as<float>() : const_cast<float*>(grads_host_.data());
  return Tensor(base + at, {std::max<int64_t>(n, 1)}, DType::f32, exec_.device());
}

void FullyShardedDataParallel::before_forward(int layer, const Tensor&, const StepContext& ctx) {
  // Training gathers on a step's first micro-batch (the weights change only in the optimizer);
  // evaluation and decoding on every forward.
  if (ctx.save_for_backward && !ctx.first_micro_batch) return;
  if (layer == 0 && exec_.model().params().layout_epoch() != layout_epoch_) lay_out();
  const int L = (int)blocks_.size();
  if (layer == 0) issued_.assign(L, false);
  if ((int)issued_.size() != L) issued_.assign(L, false);
  if (!issued_[layer]) gather(layer);
  comm_->wait(blocks_[layer].gathered);
  exec_.weights_gathered(layer, ctx);
  if (layer + 1 < L && !issued_[layer + 1]) gather(layer + 1);  // prefetch
}

void FullyShardedDataParallel::sum_whole(const Tensor& t) {
  comm_->all_reduce_tensor(t);
  if (replica_) replica_->all_reduce_tensor(t);  // (queued after it: the same stream on NCCL)
}

void FullyShardedDataParallel::reduce_whole_stage(int stage) {
  if (world_comm_.size() == 1) return;
  for (const Tensor& g : data_parallel_pieces(exec_, stage)) sum_whole(g);
}

void FullyShardedDataParallel::before_backward(int layer, const Tensor&, const Tensor&, const StepContext& ctx) {
  const int L = (int)blocks_.size();
  if (layer == L - 1) {
    for (BlockShards& b : blocks_) b.reduce_pending = false;
    if (ctx.last_micro_batch) reduce_whole_stage(L + 1);  // the head's gradients are complete
  }
  BlockShards& b = blocks_[layer];
  if (b.split.empty()) return;
  // The slot was last used by block layer + 2, whose reduce-scatter must have read it.
  if (rotate_grads_ && layer + 2 < L && blocks_[layer + 2].reduce_pending) last_comm().wait(blocks_[layer + 2].reduced);
  const Tensor slot = grad_slot(layer);
  if (rotate_grads_ || ctx.first_micro_batch) {
    if (exec_.device() == Device::cuda) cuda_memset_zero(slot.data, (size_t)b.size * sizeof(float));
    else std::fill(slot.f32(), slot.f32() + b.size, 0.0f);
  }
  ParamStore& s = exec_.model().params();
  const int64_t base = b.split.front().at;
  for (const Split& sp : b.split) {
    const ParamInfo& p = s.info(sp.id);
    if (p.grad_offset < 0) continue;
    s.set_full_views(sp.id, s.compute_param(sp.id),
                     full_shape(slot.f32() + (sp.at - base), p, DType::f32, exec_.device()));
  }
}

void FullyShardedDataParallel::after_backward(int layer, const Tensor&, const Tensor&, const StepContext& ctx) {
  if (!ctx.last_micro_batch || world_comm_.size() == 1) return;
  ParamStore& s = exec_.model().params();
  BlockShards& b = blocks_[layer];
  if (b.split.empty() && b.whole.empty()) return;
  const Tensor slot = grad_slot(layer);
  const int64_t base = b.split.empty() ? 0 : b.split.front().at;
  auto flat = [](const Tensor& g) { return Tensor(g.data, {g.numel()}, DType::f32, g.device); };
  comm_->begin_group();
  for (const Split& sp : b.split) {
    const Tensor local = s.local_grad(sp.id);
    if (!local.data) continue;  // frozen
    comm_->reduce_scatter_tensor(
        Tensor(slot.f32() + (sp.at - base), {sp.chunk * comm_->size()}, DType::f32, slot.device),
        Tensor(local.data, {sp.chunk}, DType::f32, local.device));
  }
  for (int id : b.whole) comm_->all_reduce_tensor(flat(s.local_grad(id)));
  comm_->end_group();
  if (replica_) {  // HSDP: the shard group's sums, summed over the replicas
    replica_->begin_group();
    for (const Split& sp : b.split)
      if (const Tensor local = s.local_grad(sp.id); local.data) replica_->all_reduce_tensor(flat(local));
    for (int id : b.whole) replica_->all_reduce_tensor(flat(s.local_grad(id)));
    replica_->end_group();
  }
  b.reduced = last_comm().mark();
  b.reduce_pending = true;
}

void FullyShardedDataParallel::after_model_backward(const StepContext& ctx) {
  if (!ctx.last_micro_batch || world_comm_.size() == 1) return;
  reduce_whole_stage(0);
  if (extra_)
    if (const Tensor t = extra_(); t.data) sum_whole(t);
  comm_->wait_all();
  if (replica_) replica_->wait_all();
  for (BlockShards& b : blocks_) b.reduce_pending = false;
}

std::unique_ptr<LayerHooks> attach_data_parallel(const ParallelLayout& layout, Executor& exec, AdamW& opt,
                                                 Communicator& comm, int grad_acc_steps) {
  std::function<Tensor()> rows;  // the rows a row-sparse group updates: those any rank saw
  if (opt.row_sparse()) rows = [&opt] { return opt.rows_seen(); };
  if (layout.fsdp()) {
    LINGUA_CHECK(comm.size() == layout.world, "internal error: a layout of ", layout.world, " ranks on a communicator of ",
                 comm.size());
    auto f = std::make_unique<FullyShardedDataParallel>(exec, opt, comm, grad_acc_steps, layout.shard);
    if (rows) f->reduce_also(rows);
    return f;
  }
  if (layout.world == 1) return nullptr;
  auto d = std::make_unique<DataParallel>(exec, comm, layout.reduce_dtype);
  if (rows) d->reduce_also(rows);
  return d;
}

}  // namespace lingua
