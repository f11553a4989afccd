#pragma once
// The FFN interface. A variant is one file implementing FeedForward plus one line in
// registry.cpp; nothing else names it. A variant declares its own parameters (any shapes, any
// optimizer group, which it declares too), sees the step's input token ids, checks its own config
// keys, and reports its arena needs and matmul parameters (FLOPs).
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lingua/config/train_config.h"
#include "lingua/model/dims.h"
#include "lingua/model/module.h"
#include "lingua/model/param_store.h"

namespace lingua {

// The dense SwiGLU weights an FFN computes (host, row-major): w1, w3 [hidden, dim], w2 [dim, hidden].
struct DenseSwiGLU {
  std::vector<float> w1, w3, w2;
};

class FeedForward {
 public:
  virtual ~FeedForward() = default;
  // x: [N, dim] normalised input (ctx.act dtype); out: [N, dim] f32 written with
  // residual + ffn(x) (residual: [N, dim] f32, may be out itself or empty; fuse it into the last
  // matmul). With ctx.save_for_backward, keeps what backward needs in ctx.saved (x is kept alive
  // by the caller); transient memory comes from ctx.scratch (forward_arena(ctx) for what would be
  // kept).
  virtual void forward(const Tensor& x, const Tensor& residual, const Tensor& out, const StepContext& ctx) = 0;
  // dout: [N, dim] ctx.act; dx: [N, dim] f32 or ctx.act, written. Parameter gradients accumulated.
  // May overwrite what forward saved (backward runs once per forward).
  virtual void backward(const Tensor& x, const Tensor& dout, const Tensor& dx, const StepContext& ctx) = 0;
  // Arena bytes (see arena_bytes) for `rows` rows with activations of dtype act.
  virtual size_t saved_bytes(int64_t rows, DType act) const = 0;    // kept from forward to backward
  virtual size_t scratch_bytes(int64_t rows, DType act) const = 0;  // extra, transient (forward or backward)
  // Parameters multiplied with each token (6x this per token in training FLOPs).
  virtual int64_t matmul_params() const = 0;
  // The registry key of the variant this layer runs (a variant may leave some layers dense).
  virtual const char* kind() const = 0;
  // The dense SwiGLU this FFN equals, from its current weights (export, tests); nullopt for a
  // variant that has none (a table lookup) or is dense already.
  virtual std::optional<DenseSwiGLU> dense_swiglu() const { return std::nullopt; }

  // Training progress, for a variant whose parameters or work change over a run (self-guided
  // training's guides): sets the FFN up for optimizer step `step` (0-based: the steps taken so
  // far), before it runs, before a checkpoint of that step is loaded, and before evaluating one. It
  // may add or remove parameters (the optimizer and executor follow the store's layout) and set
  // per-step scalars (StepScalars, uploaded by the caller). Must be idempotent for one step and
  // depend on nothing but the step and the config, so resumed runs repeat exactly.
  virtual void begin_step(int64_t step) { (void)step; }
  // Parameters this FFN holds but does not multiply in the step set up last (a guide skipped this
  // step): the FLOPs count leaves them out.
  virtual int64_t idle_params() const { return 0; }
  // Whether the device work of training steps differs from step to step (parameters skipped at
  // random), so a step captured once as a CUDA graph would not fit the next.
  virtual bool work_varies_per_step() const { return false; }
  // Optimizer steps this FFN adds after the configured ones, which read the data of the run's
  // first steps again (self-guided training's fixedflop mode).
  virtual int64_t replayed_steps() const { return 0; }
  // Values to log with the step set up last (e.g. "self_guided/alpha").
  virtual void add_step_metrics(std::map<std::string, double>& metrics) const { (void)metrics; }
};

struct FfnBuildArgs {
  ParamStore& store;
  const ModelDims& dims;
  const ModelConfig& cfg;
  int layer;
  std::string prefix;  // "layers.{i}.feed_forward."
};

// Lingua's FFN init: input projections (w1, w3) std init_base_std or dim^-0.5; the output
// projection (w2) (init_base_std or hidden^-0.5) / init_std_factor of the layer.
struct FfnInitStd {
  float in, out;
};
FfnInitStd ffn_init_std(const FfnBuildArgs& args);
// The spec of an FFN weight [out, in] (trunc_normal(std), axes as given).
ParamSpec ffn_weight_spec(const FfnBuildArgs& args, const char* name, int64_t out, int64_t in, const char* out_axis,
                          const char* in_axis, float std);

using FfnFactory = std::unique_ptr<FeedForward> (*)(const FfnBuildArgs&);
// Validates the variant's own config keys for any config (e.g. a key set while another variant is
// selected); `optim` is null where only the model config is known. Errors name the key.
using FfnConfigCheck = void (*)(const ModelConfig& model, const OptimConfig* optim);

// How models with a variant that has no dense SwiGLU form appear in a Hugging Face Llama directory
// (lingua/checkpoint/hf_llama.h): a config.json model_type of their own, the HF names of the
// variant's tensors, its config.json keys both ways, and the files that let transformers load such
// a model (trust_remote_code). Given by the variant's registry line.
struct FfnHfForm {
  std::string ffn;         // the registry key (model.ffn)
  std::string model_type;  // config.json "model_type"
  // The variant's tensors: name after "layers.{i}.feed_forward." -> after "model.layers.{i}.mlp.".
  std::vector<std::pair<std::string, std::string>> tensors;
  void (*write_config)(const ModelConfig& cfg, nlohmann::json& config);
  // Sets cfg.ffn and the variant's keys; errors name `path` and the config.json key.
  void (*read_config)(const nlohmann::json& config, const std::string& path, ModelConfig& cfg);
  std::vector<std::pair<std::string, std::string>> files;  // written beside the weights (name, content)
};
using FfnHfFormFn = const FfnHfForm* (*)();
// The form of variant `ffn`, of a config.json model_type, and all of them; null when none.
const FfnHfForm* ffn_hf_form(const std::string& ffn);
const FfnHfForm* ffn_hf_form_of_model_type(const std::string& model_type);
std::vector<const FfnHfForm*> ffn_hf_forms();

// Builds the variant named `kind`; an unknown name is an error listing the registered ones.
std::unique_ptr<FeedForward> make_ffn(const std::string& kind, const FfnBuildArgs& args);
// Runs every variant's config check (resolve_dims calls it without `optim`; the trainer with).
void check_ffn_config(const ModelConfig& cfg, const OptimConfig* optim = nullptr);
std::vector<std::string> ffn_kinds();

}  // namespace lingua
