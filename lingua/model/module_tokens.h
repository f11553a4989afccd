#pragma once
// Module tokens (SPEC §4): named modules of learned rows that ride in the residual stream of every
// layer, before the token rows of each sequence (the executor's prefix rows, SeqLayout::prefix).
//
// A module `name` is module_seq_len (M) rows of size dim per layer: the parameters
// layers.<l>.modules.<name> [M, dim] (with module_agg=stack only layer 0 has them). The enabled
// modules run in sorted name order, module k in prefix rows [k M, (k + 1) M) of each sequence (the
// order given in the config does not matter). Before block l, each module's rows of the residual
// stream (what block l - 1 left there, m) are set from its parameter block P_l:
//   layer 0   P_0, in every mode
//   stack     m                     (the parameters enter once, at the bottom)
//   sum       m + P_l
//   avg       (m + P_l) / 2
//   mean      (l m + P_l) / (l + 1)  (a running mean: P_0..P_l weigh alike before the blocks' updates)
//   drop      P_l                   (each layer its own rows; the stream from below is discarded)
// Module rows take part in attention under the causal mask (every token row attends to all of
// them; a module row to the module rows before it), get no RoPE rotation (token t keeps position
// t), run through the FFN, and are dropped before the output head (no loss). Modules the config
// holds but does not enable keep their parameters and take no part: the model computes what the
// base model computes, bitwise.
//
// Built by the Transformer from the model config (declaring each layer's parameters right after
// the block's, so they are part of that block's stage), and run by the executor through its first
// per-layer hook (lingua/exec/hooks.h), so that data-parallel hooks after it see the finished
// gradients.
#include <string>
#include <vector>

#include "lingua/model/dims.h"
#include "lingua/model/module.h"
#include "lingua/model/param_store.h"

namespace lingua {

// Checks the module keys of a model config (names, module_seq_len, enabled and created modules
// among model.modules); errors name the key. (An FFN variant that cannot take module rows
// refuses them in its own config check.)
void check_module_config(const ModelConfig& cfg);

// The name of module `name`'s parameter block of layer `layer`.
std::string module_param_name(int layer, const std::string& name);
// Whether a parameter name is a module's block (and of which module, when `module` is given).
bool is_module_param(const std::string& param_name, std::string* module = nullptr);

class ModuleTokens {
 public:
  ModuleTokens(const ModelConfig& cfg, const ModelDims& dims);
  // Declares the parameters of layer `layer` of every module held (call after the block's own).
  void declare_layer(ParamStore& store, int layer);
  // Freezes every parameter but the created module's (a no-op without create_module_name), and
  // the modules that do not run. Before ParamStore::finalize.
  void freeze(ParamStore& store) const;

  int rows_per_module() const { return M_; }
  int prefix_rows() const { return M_ * (int)enabled_.size(); }
  const std::vector<std::string>& enabled() const { return enabled_names_; }  // in run order
  const std::vector<std::string>& held() const { return names_; }
  const std::string& created() const { return created_; }  // model.create_module_name ("" : none)
  // Weights of the incoming rows (a) and of the parameter block (b) before layer `layer`.
  float stream_weight(int layer) const;
  float param_weight(int layer) const;
  bool has_params(int layer) const { return layer == 0 || agg_ != "stack"; }

  // Before block `layer`: sets the module rows of x ([rows, dim] f32, laid out as ctx.seq) when the
  // call has prefix rows (a decoding call after the first has none: the cache holds them).
  void forward_rows(int layer, const Tensor& x, const StepContext& ctx) const;
  // After block `layer`'s backward: accumulates the parameter gradients from dx's module rows and
  // passes the rest of their gradient down (dx and dx_act in place).
  void backward_rows(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) const;

 private:
  int M_ = 0, dim_ = 0, n_layers_ = 0;
  std::string agg_, created_;
  float init_std_ = 0;
  std::vector<std::string> names_;          // held
  std::vector<int> enabled_;                // indexes into names_, in run (sorted name) order
  std::vector<std::string> enabled_names_;
  std::vector<std::vector<int>> ids_;       // [module][layer] parameter id (-1: none)
  ParamStore* store_ = nullptr;
};

}  // namespace lingua
