#pragma once
// Per-layer hooks: how other layers of the program act on a step from outside the model code
// (parallelism: all-gather a block's weights before its forward, reduce-scatter its gradients
// after its backward; growth ramps; module tokens written into the prefix rows; profiling). The
// executor calls every hook added to it around each block:
//   forward   before_forward(l, x)   x: [rows, dim] f32, the block's input (writable: a hook may
//                                     set rows, e.g. the prefix rows before block 0)
//             after_forward(l, y)    y: the block's output
//   backward  before_backward(l, dy, dy_act)   the gradient of the block's output, f32 and its
//                                     copy in the activation dtype (dy itself when that is f32)
//             after_backward(l, dx, dx_act)    the gradient of the block's input (writable; a hook
//                                     that changes dx must change dx_act alike)
//             after_model_backward()  every gradient of the micro-batch is written (the
//                                     embedding's last)
//   sharding  weights_gathered(l)    a sharding hook (FSDP) has just gathered block l's split
//                                     weights into their full views (ParamStore::compute_param),
//                                     before the block reads them: on a training step's first
//                                     micro-batch and on every evaluation forward. A hook that
//                                     changes what the block computes with (G_random's width
//                                     masks) changes the gathered values here.
// In which order. Model hooks (those that change what the model computes: module tokens, growth
// ramps, the default) nest around the block like wrappers: the before_* events run them in the
// order added, the after_* events in reverse, so the first added (the module tokens, added by the
// executor) is outermost: it writes its rows before a later hook reads the block's input, and
// reads their gradient after that hook has finished the input's gradient. Parallel hooks
// (parallel() true: data-parallel reduction, FSDP gathers, sliced tables) move data and gradients
// without changing the function: they run after every model hook in each event, in the order
// added, so they see the gradients finished. weights_gathered and after_model_backward run in the
// before_* order.
// The gradients of stage s (Executor::stage_grads) are final for the micro-batch when: the head's
// (s = L + 1) at before_backward(L - 1), block l's (s = 1 + l) at after_backward(l), the
// embedding's (s = 0, also the output's when tied) at after_model_backward.
// Forward hooks run in training, evaluation and decoding alike (ctx.save_for_backward tells
// training apart; ctx.seq the row layout). They run inside a captured training step too, so on
// CUDA they must queue device work only (no host synchronisation).
#include "lingua/model/module.h"

namespace lingua {

class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual void before_forward(int layer, const Tensor& x, const StepContext& ctx) {}
  virtual void after_forward(int layer, const Tensor& y, const StepContext& ctx) {}
  virtual void before_backward(int layer, const Tensor& dy, const Tensor& dy_act, const StepContext& ctx) {}
  virtual void after_backward(int layer, const Tensor& dx, const Tensor& dx_act, const StepContext& ctx) {}
  virtual void after_model_backward(const StepContext& ctx) {}
  virtual void weights_gathered(int layer, const StepContext& ctx) {}
  // A parallel hook (see the order above)?
  virtual bool parallel() const { return false; }
};

}  // namespace lingua
