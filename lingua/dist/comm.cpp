// Communicator's helpers and its CPU tensor collectives over the host collectives.
// Branch i12-launch stand-in: only here so TcpComm links; main's version replaces it on merge.
#include "lingua/dist/comm.h"

#include <algorithm>
#include <cstring>

#include "lingua/core/error.h"

namespace lingua {

double Communicator::all_reduce(double v, ReduceOp op) {
  all_reduce(&v, 1, op);
  return v;
}

std::vector<std::string> Communicator::all_gather_strings(const std::string& s) {
  uint64_t n = s.size();
  std::vector<uint64_t> sizes(size());
  all_gather(&n, sizes.data(), sizeof n);
  uint64_t longest = 0;
  for (uint64_t k : sizes) longest = std::max(longest, k);
  std::string padded = s;
  padded.resize(longest);
  std::string all(longest * size(), '\0');
  all_gather(padded.data(), all.data(), longest);
  std::vector<std::string> out(size());
  for (int r = 0; r < size(); ++r) out[r] = all.substr(r * longest, sizes[r]);
  return out;
}

std::string Communicator::broadcast_string(const std::string& s, int root) {
  uint64_t n = s.size();
  broadcast(&n, sizeof n, root);
  std::string out = rank() == root ? s : std::string(n, '\0');
  broadcast(out.data(), n, root);
  return out;
}

void Communicator::all_reduce_floats(float* data, int64_t n) {
  std::vector<float> all((size_t)n * size());
  all_gather(data, all.data(), n * sizeof(float));
  for (int64_t i = 0; i < n; ++i) {
    float s = all[i];
    for (int r = 1; r < size(); ++r) s += all[(size_t)r * n + i];
    data[i] = s;
  }
}

void Communicator::all_reduce_tensor(const Tensor& t) {
  LINGUA_CHECK(t.device == Device::cpu, backend(), " communicator: all_reduce_tensor of a ", t.str(), " tensor");
  all_reduce_floats(t.f32(), t.numel());
}

void Communicator::all_gather_tensor(const Tensor& in, const Tensor& out) {
  LINGUA_CHECK(in.device == Device::cpu && out.device == Device::cpu && in.dtype == out.dtype &&
                   out.numel() == in.numel() * size(),
               backend(), " communicator: all_gather_tensor of ", in.str(), " into ", out.str());
  all_gather(in.data, out.data, in.nbytes());
}

void Communicator::reduce_scatter_tensor(const Tensor& in, const Tensor& out) {
  LINGUA_CHECK(in.device == Device::cpu && out.device == Device::cpu && out.numel() * size() == in.numel(),
               backend(), " communicator: reduce_scatter_tensor of ", in.str(), " into ", out.str());
  std::vector<float> sum(in.f32(), in.f32() + in.numel());
  all_reduce_floats(sum.data(), in.numel());
  std::memcpy(out.f32(), sum.data() + rank() * out.numel(), out.nbytes());
}

void LocalComm::all_gather(const void* in, void* out, size_t bytes) {
  if (bytes) std::memmove(out, in, bytes);
}

}  // namespace lingua
