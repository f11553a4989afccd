#include "lingua/core/tensor.h"

#include <sstream>

namespace lingua {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

Tensor::Tensor(void* p, std::initializer_list<int64_t> dims, DType dt, Device dev)
    : data(p), dtype(dt), device(dev) {
  LINGUA_ASSERT(dims.size() <= kMaxDims);
  for (int64_t d : dims) shape[ndim++] = d;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

float* Tensor::f32() const {
  LINGUA_CHECK(dtype == DType::f32, "expected an f32 tensor, got ", str());
  return static_cast<float*>(data);
}

int32_t* Tensor::i32() const {
  LINGUA_CHECK(dtype == DType::i32, "expected an i32 tensor, got ", str());
  return static_cast<int32_t*>(data);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i) r += (i ? ", " : "") + std::to_string(shape[i]);
  return r + "]";
}

std::string Tensor::str() const {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << shape[i];
  os << "] " << dtype_name(dtype) << " " << device_name(device);
  return os.str();
}

void check_shape(const char* op, const char* arg, const Tensor& t, std::initializer_list<int64_t> dims) {
  bool ok = (int)dims.size() == t.ndim;
  int i = 0;
  for (int64_t d : dims) {
    if (ok && d >= 0 && t.shape[i] != d) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream want;
    want << "[";
    i = 0;
    for (int64_t d : dims) want << (i++ ? ", " : "") << (d < 0 ? std::string("*") : std::to_string(d));
    want << "]";
    fail(op, ": argument '", arg, "' has shape ", t.str(), ", expected ", want.str());
  }
}

void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  Device d = (*ts.begin())->device;
  for (const Tensor* t : ts)
    LINGUA_CHECK(t->device == d, op, ": tensors on different devices");
}

}  // namespace lingua
