#pragma once
// Argument checks shared by the CPU op implementations (internal to lingua/ops).
#include <initializer_list>
#include <string>

#include "lingua/core/tensor.h"

namespace lingua {

// An optional argument is "given" when it points at memory; an empty Tensor{} skips it.
inline bool is_given(const Tensor& t) { return t.data != nullptr; }

// Device, shape (-1 = any size) and dtype of one argument, failing with the op and argument named.
inline void check_op_arg(const char* op, const char* arg, const Tensor& t, DType dtype,
                         std::initializer_list<int64_t> dims) {
  if (t.device == Device::cuda) fail(op, ": CUDA is not built in this version");
  check_shape(op, arg, t, dims);
  if (t.dtype != dtype)
    fail(op, ": argument '", arg, "' has dtype ", dtype_name(t.dtype), ", expected ", dtype_name(dtype));
  if (t.data == nullptr && t.numel() > 0) fail(op, ": argument '", arg, "' has no data (", t.str(), ")");
}

// Below this many elements of simple per-element work, an OpenMP parallel region costs more than
// it saves (thread wake-up is microseconds, and much worse when the cores are shared).
constexpr int64_t kMinParallelElements = int64_t(1) << 16;

inline void check_f32(const char* op, const char* arg, const Tensor& t, std::initializer_list<int64_t> dims) {
  check_op_arg(op, arg, t, DType::f32, dims);
}

// For the CUDA implementations: the tensor is on the GPU, has one of the allowed dtypes and the
// shape; fails naming the op and the argument.
inline void check_cuda_arg(const char* op, const char* arg, const Tensor& t, std::initializer_list<DType> dtypes,
                           std::initializer_list<int64_t> dims) {
  if (t.device != Device::cuda) fail(op, ": argument '", arg, "' is on the CPU but the op runs on CUDA (", t.str(), ")");
  check_shape(op, arg, t, dims);
  bool ok = false;
  for (DType d : dtypes) ok |= (t.dtype == d);
  if (!ok) {
    std::string want;
    for (DType d : dtypes) want += std::string(want.empty() ? "" : " or ") + dtype_name(d);
    fail(op, ": argument '", arg, "' has dtype ", dtype_name(t.dtype), ", expected ", want);
  }
  if (t.data == nullptr && t.numel() > 0) fail(op, ": argument '", arg, "' has no data (", t.str(), ")");
}

}  // namespace lingua
