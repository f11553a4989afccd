#pragma once
// Tensor: a non-owning view (pointer, shape, dtype, device) over memory someone else owns
// (a ParamStore buffer, an Arena, a std::vector). Ops take views and write into views.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "lingua/core/error.h"

namespace lingua {

enum class DType : uint8_t { f32, bf16, i32 };
enum class Device : uint8_t { cpu, cuda };

inline size_t dtype_size(DType d) { return d == DType::bf16 ? 2 : 4; }
const char* dtype_name(DType d);
const char* device_name(Device d);

constexpr int kMaxDims = 5;

struct Tensor {
  void* data = nullptr;
  std::array<int64_t, kMaxDims> shape{};
  int ndim = 0;
  DType dtype = DType::f32;
  Device device = Device::cpu;

  Tensor() = default;
  Tensor(void* p, std::initializer_list<int64_t> dims, DType dt = DType::f32, Device dev = Device::cpu);
  Tensor(const float* p, std::initializer_list<int64_t> dims)
      : Tensor(const_cast<float*>(p), dims, DType::f32, Device::cpu) {}
  Tensor(const int32_t* p, std::initializer_list<int64_t> dims)
      : Tensor(const_cast<int32_t*>(p), dims, DType::i32, Device::cpu) {}

  int64_t numel() const;
  int64_t size(int i) const { return shape[i < 0 ? ndim + i : i]; }
  size_t nbytes() const { return numel() * dtype_size(dtype); }
  float* f32() const;     // checks dtype == f32
  int32_t* i32() const;   // checks dtype == i32
  std::string str() const;  // "[2, 3] f32 cpu"
};

// "[2, 3]": a shape as messages print it.
std::string shape_str(const std::vector<int64_t>& shape);

// Shape checks for op contracts: fail with the op and argument named.
void check_shape(const char* op, const char* arg, const Tensor& t, std::initializer_list<int64_t> dims);
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts);

}  // namespace lingua
