#include "lingua/dist/comm.h"

#include <algorithm>
#include <cstring>

#include "lingua/core/bf16.h"
#include "lingua/core/cuda.h"

namespace lingua {

double Communicator::all_reduce(double v, ReduceOp op) {
  all_reduce(&v, 1, op);
  return v;
}

std::vector<std::string> Communicator::all_gather_strings(const std::string& s) {
  const int n = size();
  std::vector<int64_t> lens(n);
  const int64_t mine = (int64_t)s.size();
  all_gather(&mine, lens.data(), sizeof(int64_t));
  int64_t longest = 0;
  for (int64_t l : lens) longest = std::max(longest, l);
  std::string padded = s;
  padded.resize(longest);
  std::string all((size_t)(longest * n), '\0');
  all_gather(padded.data(), all.data(), (size_t)longest);
  std::vector<std::string> out(n);
  for (int r = 0; r < n; ++r) out[r] = all.substr((size_t)(r * longest), (size_t)lens[r]);
  return out;
}

std::string Communicator::broadcast_string(const std::string& s, int root) {
  int64_t len = (int64_t)s.size();
  broadcast(&len, sizeof len, root);
  std::string out = rank() == root ? s : std::string((size_t)len, '\0');
  if (len > 0) broadcast(out.data(), (size_t)len, root);
  return out;
}

void Communicator::all_reduce_floats(float* data, int64_t n) {
  // Gathered, then summed in rank order on every rank: the same bits everywhere.
  if (size() == 1) return;
  std::vector<float> all((size_t)(n * size()));
  all_gather(data, all.data(), (size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; ++i) {
    float acc = all[(size_t)i];
    for (int r = 1; r < size(); ++r) acc += all[(size_t)(r * n + i)];
    data[i] = acc;
  }
}

void Communicator::all_reduce_tensor(const Tensor& t) {
  LINGUA_CHECK(t.device == Device::cpu, "all_reduce_tensor on ", backend(), " takes CPU tensors, got ", t.str());
  if (t.dtype == DType::f32) return all_reduce_floats(t.f32(), t.numel());
  if (size() == 1) return;
  if (t.dtype == DType::bf16) {  // every rank's values summed in fp32 in rank order, rounded once
    const int64_t n = t.numel();
    std::vector<uint16_t> all((size_t)(n * size()));
    all_gather(t.data, all.data(), t.nbytes());
    uint16_t* out = static_cast<uint16_t*>(t.data);
    for (int64_t i = 0; i < n; ++i) {
      float acc = 0;
      for (int r = 0; r < size(); ++r) acc += bf16_to_float(all[(size_t)(r * n + i)]);
      out[i] = float_to_bf16(acc);
    }
    return;
  }
  const int64_t n = t.numel();
  std::vector<int32_t> all((size_t)(n * size()));
  all_gather(t.data, all.data(), t.nbytes());
  for (int64_t i = 0; i < n; ++i) {
    int32_t acc = 0;
    for (int r = 0; r < size(); ++r) acc += all[(size_t)(r * n + i)];
    t.i32()[i] = acc;
  }
}

void Communicator::all_gather_tensor(const Tensor& in, const Tensor& out) {
  LINGUA_CHECK(in.device == Device::cpu && out.device == Device::cpu && in.dtype == out.dtype &&
                   out.numel() == in.numel() * size(),
               "all_gather_tensor on ", backend(), ": in ", in.str(), ", out ", out.str());
  all_gather(in.data, out.data, in.nbytes());
}

void Communicator::reduce_scatter_tensor(const Tensor& in, const Tensor& out) {
  LINGUA_CHECK(in.device == Device::cpu && out.device == Device::cpu && in.dtype == DType::f32 &&
                   out.dtype == DType::f32 && in.numel() == out.numel() * size(),
               "reduce_scatter_tensor on ", backend(), ": in ", in.str(), ", out ", out.str());
  std::vector<float> sum(in.f32(), in.f32() + in.numel());
  all_reduce_floats(sum.data(), in.numel());
  std::memcpy(out.data, sum.data() + (size_t)(rank() * out.numel()), out.nbytes());
}

void Communicator::all_to_all_tensor(const Tensor& in, const Tensor& out) {
  LINGUA_CHECK(in.device == Device::cpu && out.device == Device::cpu && in.dtype == out.dtype &&
                   in.numel() == out.numel() && in.numel() % size() == 0,
               "all_to_all_tensor on ", backend(), ": in ", in.str(), ", out ", out.str());
  // Every rank's whole `in`, from which this rank keeps its chunk of each.
  const size_t chunk = in.nbytes() / (size_t)size();
  std::vector<char> all(in.nbytes() * (size_t)size());
  all_gather(in.data, all.data(), in.nbytes());
  for (int q = 0; q < size(); ++q)
    std::memcpy(static_cast<char*>(out.data) + (size_t)q * chunk,
                all.data() + (size_t)q * in.nbytes() + (size_t)rank() * chunk, chunk);
}

void Communicator::all_reduce_device_doubles(double* data, int64_t n) { all_reduce(data, n, ReduceOp::sum); }

std::unique_ptr<Communicator> Communicator::split(int color, int key) {
  std::vector<int> ck(2 * (size_t)size());
  const int mine[2] = {color, key};
  all_gather(mine, ck.data(), sizeof mine);
  std::vector<int> members;
  for (int r = 0; r < size(); ++r)
    if (ck[2 * (size_t)r] == color) members.push_back(r);
  std::stable_sort(members.begin(), members.end(), [&](int a, int b) { return ck[2 * (size_t)a + 1] < ck[2 * (size_t)b + 1]; });
  return std::make_unique<GroupComm>(*this, std::move(members));
}

namespace {
int index_of(const std::vector<int>& members, int rank) {
  return (int)(std::find(members.begin(), members.end(), rank) - members.begin());
}
}  // namespace

GroupComm::GroupComm(Communicator& parent, std::vector<int> members)
    : Communicator(index_of(members, parent.rank()), (int)members.size()), parent_(parent), members_(std::move(members)) {
  LINGUA_CHECK(rank() < size(), "internal error: rank ", parent.rank(), " is not a member of its group");
}

void GroupComm::broadcast(void* data, size_t bytes, int root) {
  std::vector<char> all(bytes * (size_t)parent_.size());
  parent_.all_gather(data, all.data(), bytes);
  std::memcpy(data, all.data() + bytes * (size_t)members_.at((size_t)root), bytes);
}

void GroupComm::all_reduce(double* data, int64_t n, ReduceOp op) {
  std::vector<double> all((size_t)(n * parent_.size()));
  parent_.all_gather(data, all.data(), (size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; ++i) {
    double acc = all[(size_t)(members_[0] * n + i)];
    for (size_t m = 1; m < members_.size(); ++m) {
      const double x = all[(size_t)(members_[m] * n + i)];
      acc = op == ReduceOp::sum ? acc + x : op == ReduceOp::max ? std::max(acc, x) : std::min(acc, x);
    }
    data[i] = acc;
  }
}

void GroupComm::all_gather(const void* in, void* out, size_t bytes) {
  std::vector<char> all(bytes * (size_t)parent_.size());
  parent_.all_gather(in, all.data(), bytes);
  for (size_t m = 0; m < members_.size(); ++m)
    std::memcpy(static_cast<char*>(out) + m * bytes, all.data() + bytes * (size_t)members_[m], bytes);
}

void LocalComm::all_gather(const void* in, void* out, size_t bytes) {
  if (bytes) std::memmove(out, in, bytes);
}

}  // namespace lingua
