#pragma once
// For .cu files only: error checks, the per-process CUDA context (stream, cuBLASLt handle and
// workspace), bf16 vector helpers.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lingua/core/error.h"

#define CUDA_CHECK(call)                                                                              \
  do {                                                                                                \
    cudaError_t err_ = (call);                                                                        \
    if (err_ != cudaSuccess) ::lingua::fail("CUDA error ", cudaGetErrorString(err_), " at ", __FILE__, \
                                            ":", __LINE__, ": ", #call);                               \
  } while (0)

#define CUBLAS_CHECK(call)                                                                       \
  do {                                                                                           \
    cublasStatus_t st_ = (call);                                                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS) ::lingua::fail("cuBLAS error ", cublasLtGetStatusString(st_), \
                                                     " at ", __FILE__, ":", __LINE__, ": ", #call); \
  } while (0)

// After a kernel launch: catches launch-configuration errors without synchronising.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace lingua {

using bf16 = __nv_bfloat16;

struct CudaContext {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;  // for cuBLASLt
  size_t workspace_bytes = 0;
  int sm_count = 0;
};
// Created on first use on the current device.
CudaContext& cuda_context();
inline cudaStream_t cuda_stream() { return cuda_context().stream; }

inline int ceil_div(long long a, long long b) { return (int)((a + b - 1) / b); }

}  // namespace lingua
