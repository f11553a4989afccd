#include "lingua/dist/table_parallel.h"

#include "lingua/core/cuda.h"
#include "lingua/ops/embedding/embedding.h"

namespace lingua {

void slice_tables(Transformer& model, int size, int rank) {
  ParamStore& s = model.params();
  LINGUA_CHECK(s.device() == Device::cpu, "internal error: slice_tables before the model moves to the GPU");
  if (size == 1) return;
  int sliced = 0;
  const std::vector<int> ids = s.ids();  // (set_placement lays the store out again)
  for (int id : ids) {
    const int stage = model.stage_of(id);
    const ParamInfo& p = s.info(id);
    if (stage < 1 || stage > model.n_layers() || !p.embedding || p.shape.size() != 2) continue;
    LINGUA_CHECK(p.shape[1] % size == 0, "config key 'distributed.stem_parallel_size' is ", size, ": table '", p.name,
                 "' has ", p.shape[1], " columns, which do not split in ", size, " equal slices");
    s.set_placement(id, Placement::ColumnSlice(size, rank));
    ++sliced;
  }
  LINGUA_CHECK(sliced > 0, "config key 'distributed.stem_parallel_size' is ", size,
               " but the model has no per-layer tables to split (FFN variants with per-layer token-indexed tables have them)");
}

std::vector<float> gather_column_slices(Communicator& group, const ParamInfo& p, const std::vector<float>& local) {
  LINGUA_CHECK(p.placement.kind == Placement::column_slice && p.placement.size == group.size(),
               "internal error: gathering parameter '", p.name, "' sliced over ", p.placement.size, " of ",
               group.size(), " processes");
  const int P = group.size();
  const int64_t C = p.local_shape.back(), rows = (int64_t)local.size() / C;
  std::vector<float> all(local.size() * (size_t)P), full(all.size());
  group.all_gather(local.data(), all.data(), local.size() * sizeof(float));
  for (int q = 0; q < P; ++q)  // slice q: columns [q * C, (q + 1) * C)
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(all.data() + (size_t)(q * rows * C + r * C), C, full.data() + (size_t)(r * P * C + q * C));
  return full;
}

SplitValues gather_sliced_values(Communicator& group, const ParamStore& store, const AdamW& opt) {
  SplitValues out;
  for (int id : store.ids()) {
    const ParamInfo& p = store.info(id);
    if (p.placement.kind != Placement::column_slice) continue;
    FullValues& v = out[id];
    v.weights = gather_column_slices(group, p, store.host_param(id));
    if (p.grad_offset >= 0) {
      v.m = gather_column_slices(group, p, opt.host_m(id));
      v.v = gather_column_slices(group, p, opt.host_v(id));
    }
  }
  return out;
}

TableParallel::TableParallel(Executor& exec, AdamW& opt, Communicator& comm, int group_size)
    : exec_(exec), opt_(opt) {
  const int W = comm.size(), r = comm.rank(), P = group_size;
  LINGUA_CHECK(P >= 1 && W % P == 0, "config key 'distributed.stem_parallel_size' is ", P, " but ", W,
               " processes were started: the table group size must divide the number of processes");
  LINGUA_CHECK(comm.device() == exec.device() || W == 1, "table parallelism: the communicator (", comm.backend(),
               ") is for ", device_name(comm.device()), " tensors, the model is on ", device_name(exec.device()));
  group_ = comm.split(r / P, r % P);
  if (W > P) replica_ = comm.split(r % P, r / P);
  Transformer& model = exec.model();
  const ParamStore& s = model.params();
  sliced_.assign(model.n_layers(), {});
  for (int id : s.ids()) {
    const ParamInfo& p = s.info(id);
    if (p.placement.kind != Placement::column_slice) continue;
    LINGUA_CHECK(p.placement.size == P && p.placement.rank == r % P, "table '", p.name, "' is sliced over ",
                 p.placement.size, " ranks (slice ", p.placement.rank, "), this rank's group has ", P, " (slice ",
                 r % P, ")");
    const int stage = model.stage_of(id);
    if (p.grad_offset >= 0 && stage >= 1 && stage <= model.n_layers()) sliced_[stage - 1].push_back(id);
  }
  opt_.set_split_norm_reducer([this](double* sq) { group_->all_reduce_device_doubles(sq, 1); },
                              Placement::column_slice);
  exec_.add_hooks(this);
  exec_.set_sliced_tables(this);
}

TableParallel::~TableParallel() {
  exec_.set_sliced_tables(nullptr);
  exec_.remove_hooks(this);
  opt_.set_split_norm_reducer([](double*) {}, Placement::column_slice);
}

Tensor TableParallel::group_ids(const Tensor& ids, Arena& scratch) {
  const int64_t n = ids.numel();
  Tensor all(scratch.alloc((size_t)(n * group_->size()) * 4), {n * group_->size()}, DType::i32, ids.device);
  group_->all_gather_tensor(Tensor(ids.data, {n}, DType::i32, ids.device), all);
  group_->wait_all();
  return all;
}

void TableParallel::forward(const Tensor& ids, const Tensor& slice, const Tensor& out, Arena& scratch) {
  const int P = group_->size();
  const int64_t n = ids.numel(), C = slice.size(1);
  LINGUA_CHECK(out.ndim == 2 && out.size(0) == n && out.size(1) == P * C, "sliced lookup: ids ", ids.str(), ", slice ",
               slice.str(), ", out ", out.str());
  const size_t mark = scratch.mark();
  const Tensor all = group_ids(ids, scratch);
  // Rows q * n + i: this rank's columns of rank q's token i; then to rank q.
  Tensor mine(scratch.alloc((size_t)(P * n * C) * dtype_size(out.dtype)), {P * n, C}, out.dtype, out.device);
  Tensor got(scratch.alloc((size_t)(P * n * C) * dtype_size(out.dtype)), {P * n, C}, out.dtype, out.device);
  embedding_forward(all, slice, mine);
  group_->all_to_all_tensor(mine, got);
  group_->wait_all();
  // got rows q * n + i: rank q's columns of this rank's token i.
  for (int q = 0; q < P; ++q)
    copy_columns(out, q * C, Tensor(static_cast<char*>(got.data) + (size_t)(q * n * C) * dtype_size(got.dtype), {n, C},
                                    got.dtype, got.device),
                 0, C);
  scratch.release_to(mark);
}

void TableParallel::backward(const Tensor& ids, const Tensor& dout, const Tensor& dslice, Arena& scratch) {
  const int P = group_->size();
  const int64_t n = ids.numel(), C = dslice.size(1);
  LINGUA_CHECK(dout.ndim == 2 && dout.size(0) == n && dout.size(1) == P * C, "sliced lookup backward: ids ", ids.str(),
               ", dout ", dout.str(), ", dslice ", dslice.str());
  const size_t mark = scratch.mark();
  const Tensor all = group_ids(ids, scratch);
  Tensor send(scratch.alloc((size_t)(P * n * C) * dtype_size(dout.dtype)), {P * n, C}, dout.dtype, dout.device);
  Tensor got(scratch.alloc((size_t)(P * n * C) * dtype_size(dout.dtype)), {P * n, C}, dout.dtype, dout.device);
  for (int q = 0; q < P; ++q)  // rows q * n + i: rank q's columns of this rank's token i
    copy_columns(Tensor(static_cast<char*>(send.data) + (size_t)(q * n * C) * dtype_size(send.dtype), {n, C},
                        send.dtype, send.device),
                 0, dout, q * C, C);
  group_->all_to_all_tensor(send, got);
  group_->wait_all();
  // got rows q * n + i: this rank's columns of rank q's token i, whose id is all[q * n + i].
  embedding_backward(all, got, dslice);
  scratch.release_to(mark);
}

void TableParallel::after_backward(int layer, const Tensor&, const Tensor&, const StepContext& ctx) {
  if (!ctx.last_micro_batch || !replica_) return;
  ParamStore& s = exec_.model().params();
  for (int id : sliced_[layer]) {
    const Tensor g = s.local_grad(id);
    replica_->all_reduce_tensor(Tensor(g.data, {g.numel()}, DType::f32, g.device));
  }
}

void TableParallel::after_model_backward(const StepContext& ctx) {
  if (ctx.last_micro_batch && replica_) replica_->wait_all();
}

}  // namespace lingua
