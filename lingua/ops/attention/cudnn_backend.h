#pragma once
// The cuDNN 9 backend (graph) C API as cudnn_sdpa.cu uses it: errors with cuDNN's own detail, owned
// descriptors, the library's handle and version, and a builder that collects one operation graph.
// A private header of cudnn_sdpa.cu (its only includer, which has found cudnn_graph.h).
#include <cudnn_graph.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "lingua/core/cuda_utils.cuh"

namespace lingua::attention_internal {
namespace {

struct BackendError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(cudnnStatus_t st, const char* what) {
  if (st == CUDNN_STATUS_SUCCESS) return;
  std::string msg = std::string(what) + ": " + cudnnGetErrorString(st);
  char detail[1024] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  if (detail[0]) msg += std::string(" (") + detail + ")";
  throw BackendError(msg);
}

// An owned backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) { check(cudnnBackendCreateDescriptor(type, &d_), "create descriptor"); }
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  template <class V>
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t n, const V* values) {
    check(cudnnBackendSetAttribute(d_, name, type, n, values), "set attribute");
  }
  void set_desc(cudnnBackendAttributeName_t name, const Desc& d) {
    cudnnBackendDescriptor_t raw = d.get();
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
  }
  void finalize(const char* what) { check(cudnnBackendFinalize(d_), what); }
  int64_t get_int64(cudnnBackendAttributeName_t name) const {
    int64_t v = 0, n = 0;
    check(cudnnBackendGetAttribute(d_, name, CUDNN_TYPE_INT64, 1, &n, &v), "get attribute");
    return v;
  }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};
using DescP = std::shared_ptr<Desc>;
DescP make(cudnnBackendDescriptorType_t type) { return std::make_shared<Desc>(type); }

// The cuDNN library and one handle on our stream, set up on first use.
struct Library {
  bool ok = false;
  std::string why;
  int64_t version = 0;
  cudnnHandle_t handle = nullptr;
};

Library& library() {
  static Library lib;
  static std::once_flag once;
  std::call_once(once, [] {
    lib.version = (int64_t)cudnnGetVersion();
    if (lib.version < 90000) {
      lib.why = "cuDNN " + std::to_string(lib.version) + " is older than 9.0";
      return;
    }
    cudnnStatus_t st = cudnnCreate(&lib.handle);
    if (st != CUDNN_STATUS_SUCCESS) {
      lib.why = std::string("cudnnCreate failed: ") + cudnnGetErrorString(st);
      return;
    }
    st = cudnnSetStream(lib.handle, cuda_stream());
    if (st != CUDNN_STATUS_SUCCESS) {
      lib.why = std::string("cudnnSetStream failed: ") + cudnnGetErrorString(st);
      return;
    }
    lib.ok = true;
  });
  return lib;
}

// Unique ids of the non-virtual tensors (bound in the variant pack); virtual ones count from 100.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kNegInf, kDO, kDQ, kDK, kDV, kOne, kSoftmaxSum, kDQAccum,
};

using A4 = std::array<int64_t, 4>;

// Collects the descriptors of one operation graph.
class GraphBuilder {
 public:
  DescP tensor(int64_t uid, cudnnDataType_t dtype, const A4& dims, const A4& strides, bool is_virtual,
               bool by_value = false) {
    DescP t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    const bool virt = is_virtual;
    t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype);
    t->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    t->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    t->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    t->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    t->set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
    if (by_value) {
      const bool yes = true;
      t->set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes);
    }
    t->finalize("tensor descriptor");
    keep_.push_back(t);
    return t;
  }
  DescP virt(cudnnDataType_t dtype, const A4& dims, const A4& strides) {
    return tensor(next_uid_++, dtype, dims, strides, true);
  }
  // A host scalar passed by value at execution.
  DescP scalar(int64_t uid) { return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true); }

  // y = mode(x[, b][, t]); returns y.
  DescP pointwise(cudnnPointwiseMode_t mode, const DescP& x, const DescP& b, const DescP& t, const DescP& y,
                  cudnnDataType_t precision = CUDNN_DATA_FLOAT, int64_t axis = -1) {
    DescP pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    pw->set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    pw->set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (axis >= 0) pw->set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    pw->finalize("pointwise descriptor");
    DescP op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, *pw);
    op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, *x);
    if (b) op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b);
    if (t) op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, *t);
    op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, *y);
    op->finalize("pointwise operation");
    add(pw, op);
    return y;
  }
  void reduction(cudnnReduceTensorOp_t reduce, const DescP& x, const DescP& y) {
    DescP r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    r->set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce);
    r->set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    r->finalize("reduction descriptor");
    DescP op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, *r);
    op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, *x);
    op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, *y);
    op->finalize("reduction operation");
    add(r, op);
  }
  // c = a b over the last two dims, batched (and broadcast: h of a a multiple of h of b).
  void matmul(const DescP& a, const DescP& b, const DescP& c) {
    DescP m = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    m->set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    m->finalize("matmul descriptor");
    DescP op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, *a);
    op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, *b);
    op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, *c);
    op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, *m);
    op->finalize("matmul operation");
    add(m, op);
  }
  // y: the same elements as x under other dims / strides (a transpose, here).
  void reshape(const DescP& x, const DescP& y) {
    DescP op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    op->set_desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, *x);
    op->set_desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, *y);
    op->finalize("reshape operation");
    add(nullptr, op);
  }
  // The causal mask on scores x [b, h, T, T]: x where row >= col, else -inf.
  DescP causal(const DescP& x, const DescP& neg_inf, const A4& dims, const A4& strides) {
    DescP row = pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, virt(CUDNN_DATA_INT32, dims, strides),
                          CUDNN_DATA_INT32, 2);
    DescP col = pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, virt(CUDNN_DATA_INT32, dims, strides),
                          CUDNN_DATA_INT32, 3);
    DescP keep = pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, virt(CUDNN_DATA_BOOLEAN, dims, strides),
                           CUDNN_DATA_BOOLEAN);
    return pointwise(CUDNN_POINTWISE_BINARY_SELECT, x, neg_inf, keep, virt(CUDNN_DATA_FLOAT, dims, strides));
  }

  DescP finalize(cudnnHandle_t handle) {
    std::vector<cudnnBackendDescriptor_t> raw;
    for (const DescP& op : ops_) raw.push_back(op->get());
    DescP g = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    g->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    g->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, (int64_t)raw.size(), raw.data());
    g->finalize("operation graph");
    keep_.push_back(g);
    return g;
  }
  std::vector<DescP>& kept() { return keep_; }

 private:
  void add(const DescP& d, const DescP& op) {
    if (d) keep_.push_back(d);
    keep_.push_back(op);
    ops_.push_back(op);
  }
  std::vector<DescP> keep_, ops_;
  int64_t next_uid_ = 100;
};

}  // namespace
}  // namespace lingua::attention_internal
