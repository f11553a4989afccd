#include "lingua/dist/ddp.h"

#include <algorithm>

#include "lingua/ops/cast/cast.h"

namespace lingua {

std::vector<Tensor> data_parallel_pieces(const Executor& exec, int stage) {
  const Tensor g = exec.stage_grads(stage);
  if (!g.data) return {};
  const ParamStore& s = exec.model().params();
  std::vector<std::pair<int64_t, int64_t>> holes;  // [begin, end) in floats from the stage's start
  const float* base = g.f32();
  const int64_t start = base - s.grads_data();
  for (int id : s.ids()) {
    const ParamInfo& p = s.info(id);
    if (p.placement.kind == Placement::column_slice && p.grad_offset >= 0 && exec.model().stage_of(id) == stage)
      holes.push_back({p.grad_offset - start, p.grad_offset - start + p.numel});
  }
  if (holes.empty()) return {g};
  std::sort(holes.begin(), holes.end());
  std::vector<Tensor> pieces;
  int64_t at = 0;
  auto piece = [&](int64_t b, int64_t e) {
    if (e > b) pieces.push_back(Tensor(const_cast<float*>(base) + b, {e - b}, DType::f32, g.device));
  };
  for (auto [b, e] : holes) {
    piece(at, b);
    at = std::max(at, e);
  }
  piece(at, g.numel());
  return pieces;
}

DataParallel::DataParallel(Executor& exec, Communicator& comm, DType reduce_dtype)
    : exec_(exec), comm_(comm), reduce_dtype_(reduce_dtype) {
  LINGUA_CHECK(comm.device() == exec.device() || comm.size() == 1, "data parallelism: the communicator (",
               comm.backend(), ") is for ", device_name(comm.device()), " tensors, the model is on ",
               device_name(exec.device()));
  LINGUA_CHECK(reduce_dtype == DType::f32 || reduce_dtype == DType::bf16,
               "data parallelism reduces gradients in fp32 or bf16, not ", dtype_name(reduce_dtype));
  exec_.add_hooks(this);
}

Tensor DataParallel::bf16_buffer(int64_t n) {
  if (bf16_used_ == 0) {  // a step's first piece: room for every stage's (the layout may have changed)
    int64_t total = 0;
    for (int s = 0; s < exec_.n_stages(); ++s)
      for (const Tensor& g : data_parallel_pieces(exec_, s)) total += g.numel();
    if (exec_.device() == Device::cuda && (int64_t)bf16_dev_.bytes() < total * 2) bf16_dev_ = DeviceBuffer((size_t)total * 2);
    if (exec_.device() != Device::cuda && (int64_t)bf16_host_.size() < total) bf16_host_.resize((size_t)total);
  }
  const int64_t have = exec_.device() == Device::cuda ? (int64_t)bf16_dev_.bytes() / 2 : (int64_t)bf16_host_.size();
  LINGUA_CHECK(bf16_used_ + n <= have, "internal error: the bf16 gradient buffer is smaller than the step's gradients");
  if (exec_.device() == Device::cuda)
    return Tensor(bf16_dev_.as<uint16_t>() + bf16_used_, {n}, DType::bf16, Device::cuda);
  return Tensor(bf16_host_.data() + bf16_used_, {n}, DType::bf16, Device::cpu);
}

DataParallel::~DataParallel() { exec_.remove_hooks(this); }

void DataParallel::reduce_stage(int stage) {
  if (reduced_[stage]) return;
  reduced_[stage] = true;
  if (comm_.size() == 1) return;
  for (const Tensor& g : data_parallel_pieces(exec_, stage)) {
    if (reduce_dtype_ == DType::bf16) {
      const Tensor b = bf16_buffer(g.numel());
      bf16_used_ += g.numel();
      cast_into(b, g);
      comm_.all_reduce_tensor(b);
      cast_back_.push_back({g, b});
    } else {
      comm_.all_reduce_tensor(g);
    }
    ++collectives_;
  }
}

void DataParallel::before_backward(int layer, const Tensor&, const Tensor&, const StepContext& ctx) {
  if (!ctx.last_micro_batch) return;
  const int L = exec_.model().n_layers();
  if (layer == L - 1) {  // the first block of the backward: the head's gradients are complete
    reduced_.assign(exec_.n_stages(), false);
    bf16_used_ = 0;  // (also after a backward that threw part-way, e.g. a failed graph capture)
    cast_back_.clear();
    reduce_stage(L + 1);
  }
}

void DataParallel::after_backward(int layer, const Tensor&, const Tensor&, const StepContext& ctx) {
  if (ctx.last_micro_batch) reduce_stage(1 + layer);
}

void DataParallel::after_model_backward(const StepContext& ctx) {
  if (!ctx.last_micro_batch) return;
  if ((int)reduced_.size() != exec_.n_stages()) reduced_.assign(exec_.n_stages(), false);  // no blocks
  for (int s = exec_.n_stages() - 1; s >= 0; --s) reduce_stage(s);
  if (extra_ && comm_.size() > 1)
    if (const Tensor t = extra_(); t.data) {
      comm_.all_reduce_tensor(t);
      ++collectives_;
    }
  comm_.wait_all();
  for (const auto& [g, b] : cast_back_) cast_into(g, b);
  cast_back_.clear();
  bf16_used_ = 0;
  reduced_.clear();
}

}  // namespace lingua
