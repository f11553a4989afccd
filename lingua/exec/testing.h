#pragma once
// For tests: a model and the executor that runs it, built together (the executor needs the
// model on its device first).
#include "lingua/exec/executor.h"

namespace lingua::test_util {

struct ModelRun {
  Transformer model;
  Executor exec;
  ModelRun(const ModelConfig& cfg, const ModelDims& dims, Device device = Device::cpu)
      : model(cfg, dims), exec((model.to_device(device), model)) {}
  ParamStore& params() { return model.params(); }
};

}  // namespace lingua::test_util
