// lingua grow: model growth (PRTS, SPEC §5). Builds a larger model from a trained smaller one's
// checkpoint with a growth operator and writes it as a new checkpoint (weights and config; a new
// run starts from it with checkpoint.init_ckpt_path, with a fresh optimizer and schedule, as PRTS
// does). op=learn (G_learn) trains its map on the data after the source run's first
// (apps/grow_learn.cpp). `lingua grow plan` prints PRTS's growth guideline for a target size and
// token budget.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/grow_learn.h"
#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/config/config.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/growth_ramp.h"
#include "lingua/model/growth.h"
#include "lingua/train/growth_run.h"

namespace fs = std::filesystem;

namespace lingua::app {

namespace {

struct GrowConfig {
  std::string ckpt;
  std::string target;  // a training config file of the target model
  int n_layers = 0;    // or: the source's config with this depth
  std::optional<double> ffn_dim_multiplier;
  int n_heads = 0;
  int dim = 0;
  std::string op = "stack";
  std::optional<std::vector<int>> stacking_list;
  std::string out;
  std::string tokenizer_path;
  int64_t seed = 0;
  int64_t learn_steps = GrowthConfig{}.learn_steps;
  double learn_lr = GrowthConfig{}.learn_lr;
  int64_t ramp_steps = 0;
  std::string device = "cpu";
  template <class V> void visit(V& v) {
    v("ckpt", ckpt, "the source: a checkpoint step directory, or a dump_dir (its newest checkpoint); never written to");
    v("target", target, "the target model's training config (YAML); its model.* must equal the source's but for "
      "model.n_layers (and, op=zero, split or learn, the widths below); op=learn reads its data.*");
    v("n_layers", n_layers, "instead of target=: the source's config with this many layers (0: the source's)");
    v("ffn_dim_multiplier", ffn_dim_multiplier, "instead of target=: the source's config with this FFN width "
      "multiplier (op=zero, split or learn; model.ffn=blockdense or blockshuffle: model.structured.nblocks, for "
      "blockshuffle its square, must divide the source's and the target's width, units kept in their blocks)");
    v("n_heads", n_heads, "instead of target=: the source's config with this many attention heads (op=zero, split or learn; "
      "the source must set model.head_dim and use no grouped-query attention)");
    v("dim", dim, "instead of target=: the source's config with this model dimension (op=zero, split, random or learn; "
      "the source must set model.head_dim; model.norm_eps is scaled by source dim / dim, so the function is kept "
      "exactly (a target config should do the same); not with model.ffn=blockdense or blockshuffle)");
    v.choice("op", op, {"stack", "zero", "split", "learn", "random"},
             "growth operator: stack (G_stack: target layer i copies source layer stacking_list[i]); zero (G_zero: "
             "a layer listed as -1 is a new identity block, its output projections zero; new FFN units, heads and "
             "model coordinates are zero); split (G_split: new FFN units, heads and model coordinates copy random "
             "source ones, the function kept); learn (G_learn, LiGO: a learned map from the source's weights, "
             "starting as G_split (in depth: G_stack) and trained for learn_steps batches of the target's data.*, "
             "read on from where the source run's data loader stopped; the checkpoint's loader states are advanced "
             "past them); random (G_random: layers listed as -1, and new FFN units, model coordinates and heads, "
             "are as the target's init draws them, and ramp in over ramp_steps from step 0 of the run that trains the "
             "checkpoint: growth_ramp.h's masks, recorded in its growth.json)");
    v("seed", seed, "op=split or learn (its start): the seed of the units copied");
    v("learn_steps", learn_steps, "op=learn: Adam steps on the map, each on one batch of every rank's data loader of "
      "the source checkpoint (0: the map's start, G_split or G_stack)");
    v("learn_lr", learn_lr, "op=learn: the learning rate of those steps");
    v("ramp_steps", ramp_steps, "op=random: the optimizer steps of each ramp stage in the run that trains the "
      "checkpoint (new layers and FFN units, then model coordinates, then heads; 0: the target config's "
      "optim.warmup)");
    v.choice("device", device, {"cpu", "cuda"}, "op=learn: where the target model runs while its map learns");
    v("stacking_list", stacking_list, "source layer of each target layer, e.g. '[0, 1, 2, 0, 1, 2]' (default: the "
      "source's layers repeated, PRTS's layout; op=zero: -1 for a new layer)");
    v("out", out, "root directory of the grown checkpoint (written as OUT/0000000000); required");
    v("tokenizer_path", tokenizer_path, "use this tokenizer file instead of the checkpoint's");
  }
};

struct PlanConfig {
  double params = 0;  // N
  double tokens = 0;  // D
  std::string config;
  template <class V> void visit(V& v) {
    v("params", params, "the target model's parameters N, e.g. 7e9 (or give config=)");
    v("tokens", tokens, "the training tokens D, e.g. 2e12 (or the config's steps x tokens per step)");
    v("config", config, "the target's training config: N from its model, D from steps x batch x seq_len x "
      "grad_acc_steps unless tokens= is given");
  }
};

std::string human(double x) {
  const char* units[] = {"", "K", "M", "B", "T"};
  int u = 0;
  while (std::abs(x) >= 1000 && u < 4) x /= 1000, ++u;
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%s", x, units[u]);
  return b;
}

std::string list_text(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

int plan_main(const Args& args) {
  if (print_help_if_asked<PlanConfig>(args, "lingua grow plan params=N tokens=D | config=target.yaml [tokens=D]"))
    return 0;
  // (config= is this command's own key here, not a file of it: read it by hand.)
  PlanConfig c;
  Args own;
  for (const std::string& a : args) {
    if (a.rfind("config=", 0) == 0) c.config = a.substr(7);
    else own.push_back(a);
  }
  const std::string file = c.config;
  c = parse_config<PlanConfig>(own);
  c.config = file;
  double N = c.params, D = c.tokens, source_params = 0;
  int layers = 0;
  if (!c.config.empty()) {
    TrainConfig t = parse_config<TrainConfig>({"config=" + c.config});
    auto tok = make_tokenizer(t.data.tokenizer);
    const ModelDims dims = resolve_dims(t.model, tok->n_words());
    Transformer target(t.model, dims);
    N = (double)target.param_counts().total;
    layers = dims.n_layers;
    if (D <= 0) D = (double)t.steps * t.data.batch_size * t.data.seq_len * t.grad_acc_steps;
    if (layers % 4 == 0) {
      ModelConfig small = t.model;
      small.n_layers = layers / 4;
      source_params = (double)Transformer(small, resolve_dims(small, tok->n_words())).param_counts().total;
    }
  }
  LINGUA_CHECK(N > 0, "give the target's parameters (params=7e9) or its config (config=target.yaml)");
  LINGUA_CHECK(D > 0, "give the training tokens (tokens=2e12), or a config with steps");
  const GrowthPlan p = plan_growth(N, D, layers, source_params);
  std::printf("target: N = %s parameters, D = %s tokens, C = 6 N D = %.3g FLOPs\n", human(N).c_str(),
              human(D).c_str(), p.C);
  std::printf("PRTS guideline (G_stack): growth factor g = %d, growth timing d = %s tokens (%.2f%% of D)\n", p.g,
              human(p.d).c_str(), 100.0 * p.d / D);
  if (layers > 0)
    std::printf("source model: %d layers (the target's %d / g)%s, %s parameters\n", p.source_layers, layers,
                layers % 4 ? " -- the target's depth is not a multiple of 4: choose a stacking list" : "",
                human(p.source_params).c_str());
  else
    std::printf("source model: 1/g of the target's layers, about %s parameters\n", human(p.source_params).c_str());
  if (p.d >= D) {
    std::printf("d >= D: at this budget the guideline says not to grow (the formula was fitted on runs of billions "
                "of parameters and tokens; at small C its 163.27 / log10(C) term dominates)\n");
    return 0;
  }
  std::printf("plan: train the source for d tokens, lingua grow op=stack, then train the target for D - d = %s tokens\n",
              human(D - p.d).c_str());
  std::printf("compute: the first d tokens cost 6 N_src d instead of 6 N d: %.2f%% of the budget saved (before any "
              "gain in tokens-to-loss, which PRTS reports as 54.6%% of FLOPs at 7B and which is not predicted here)\n",
              100.0 * p.flops_saved_fraction());
  return 0;
}

}  // namespace

int grow_main(const Args& args) {
  if (!args.empty() && args[0] == "plan") return plan_main(Args(args.begin() + 1, args.end()));
  if (print_help_if_asked<GrowConfig>(
          args, "lingua grow ckpt=SRC (target=target.yaml | n_layers=N | ffn_dim_multiplier=X | n_heads=H | dim=D) "
                "[op=stack|zero|split|learn|random] [stacking_list='[...]'] [seed=S] [learn_steps=N learn_lr=X "
                "device=cpu|cuda] [ramp_steps=N] out=DIR\n       lingua grow plan params=N tokens=D | config=target.yaml"))
    return 0;
  GrowConfig c = parse_config<GrowConfig>(args);
  LINGUA_CHECK(!c.ckpt.empty(), "config key 'ckpt' is required (the source checkpoint or its dump_dir)");
  const bool by_keys = c.n_layers > 0 || c.ffn_dim_multiplier || c.n_heads > 0 || c.dim > 0;
  LINGUA_CHECK(c.target.empty() == by_keys, "give the target model: target=target.yaml, or any of n_layers=N, "
               "ffn_dim_multiplier=X, n_heads=H, dim=D (not both forms)");
  const GrowthOperator op = parse_growth_operator(c.op);
  LINGUA_CHECK(c.ramp_steps >= 0, "config key 'ramp_steps' is ", c.ramp_steps, ": op=random ramps over >= 1 steps "
               "per stage (0: the target config's optim.warmup)");
  LINGUA_CHECK(c.ramp_steps == 0 || op == GrowthOperator::random, "config key 'ramp_steps' is for op=random (its "
               "ramp), not op=", c.op);
  if (op == GrowthOperator::learn)
    LINGUA_CHECK(c.learn_steps >= 0, "config key 'learn_steps' is ", c.learn_steps, ": op=learn takes >= 0 Adam "
                 "steps on its map (0: the map's start, G_split or G_stack)");
  LoadedModel src = load_model(c.ckpt, c.tokenizer_path, "cpu");
  TrainConfig target_cfg = src.config;
  if (!c.target.empty()) {
    target_cfg = parse_config<TrainConfig>({"config=" + c.target});
    if (!c.tokenizer_path.empty()) target_cfg.data.tokenizer.path = c.tokenizer_path;
  } else {
    if (c.n_layers > 0) target_cfg.model.n_layers = c.n_layers;
    if (c.ffn_dim_multiplier) target_cfg.model.ffn_dim_multiplier = c.ffn_dim_multiplier;
    if (c.n_heads > 0) target_cfg.model.n_heads = c.n_heads;
    if (c.dim > 0 && c.dim != target_cfg.model.dim) {
      target_cfg.model.dim = c.dim;
      target_cfg.model.norm_eps = grown_norm_eps(src.config.model, c.dim);  // (the function kept exactly)
      std::fprintf(stderr, "lingua grow: model.norm_eps %g -> %g (x %d / %d: the wider stream's RMS is smaller)\n",
                   src.config.model.norm_eps, target_cfg.model.norm_eps, src.config.model.dim, c.dim);
    }
  }
  if (const std::string note = norm_eps_note(src.config.model, target_cfg.model); !note.empty())
    std::fprintf(stderr, "lingua grow: note: %s\n", note.c_str());
  const int L = target_cfg.model.n_layers;
  const std::vector<int> list =
      c.stacking_list ? *c.stacking_list : default_stacking_list(src.model->n_layers(), L);
  check_growth(src.config.model, target_cfg.model, op, list);
  const std::string out = new_checkpoint_dir(c.ckpt, src.checkpoint_dir, c.out, 0);
  Transformer target(target_cfg.model, resolve_dims(target_cfg.model, src.tokenizer->n_words()));
  std::optional<GrowLearnResult> learned;
  if (op == GrowthOperator::learn)
    learned = grow_learned(src, target, target_cfg.data, list, {c.learn_steps, c.learn_lr, c.device, (uint64_t)c.seed});
  else
    grow_model(*src.model, target, op, list, (uint64_t)c.seed);
  const std::string step_dir = fs::weakly_canonical(fs::absolute(src.checkpoint_dir)).string();
  nlohmann::json record = {{"source_checkpoint", step_dir},
                                 {"source_step", checkpoint_step(src.checkpoint_dir)},
                                 {"operator", growth_operator_name(op)},
                                 {"stacking_list", list},
                                 {"seed", c.seed},
                                 {"source_hidden", src.model->dims().hidden},
                                 {"target_hidden", target.dims().hidden},
                                 {"source_layers", src.model->n_layers()},
                                 {"target_layers", L},
                                 {"source_params", src.model->param_counts().total},
                                 {"target_params", target.param_counts().total}};
  if (op == GrowthOperator::random) {
    const RecordedRamp ramp{new_layers(list), ramp_steps_or_warmup(c.ramp_steps, target_cfg.optim), 0, src.config.model};
    record["ramp"] = ramp_record(ramp);
    // The ramp the training run will build, built here first: what it refuses is refused before
    // anything is written.
    make_growth_ramp(target, ramp, 0);
  }
  if (learned) {
    const auto loss = [&](double l) { return learned->steps > 0 ? nlohmann::json(l) : nlohmann::json(nullptr); };
    record["learn_steps"] = learned->steps;
    record["learn_lr"] = c.learn_lr;
    record["learn_first_loss"] = loss(learned->first_loss);
    record["learn_last_loss"] = loss(learned->last_loss);
    record["learn_tokens"] = learned->tokens;
    record["learn_ranks"] = learned->ranks;
    record["learn_device"] = c.device;
  }
  // The source run's data-loader states go along (G_learn: advanced past the map's batches): training
  // the grown model (checkpoint.init_data_state) reads on from where the source (and the map) stopped.
  std::vector<std::pair<std::string, std::string>> extra = {{CheckpointFiles::growth, record.dump(1) + "\n"}};
  if (learned) {
    extra.insert(extra.end(), learned->train_states.begin(), learned->train_states.end());
  } else {
    for (int r = 0; r < checkpoint_rank_count(src.checkpoint_dir); ++r) {
      const std::string name = CheckpointFiles::train_state(r);
      extra.push_back({name, read_text_file((fs::path(src.checkpoint_dir) / name).string())});
    }
  }
  const std::string written = save_model_checkpoint(out, 0, target_cfg, target, extra);
  std::fprintf(stderr, "lingua grow: G_%s, %d -> %d layers, FFN %d -> %d, %d -> %d heads (%s -> %s parameters), "
               "stacking list %s: %s -> %s\n",
               growth_operator_name(op), src.model->n_layers(), L, src.model->dims().hidden, target.dims().hidden,
               src.model->dims().n_heads, target.dims().n_heads,
               human((double)src.model->param_counts().total).c_str(),
               human((double)target.param_counts().total).c_str(), list_text(list).c_str(), step_dir.c_str(),
               written.c_str());
  if (op == GrowthOperator::random)
    std::fprintf(stderr, "lingua grow: G_random: train it with checkpoint.init_ckpt_path=%s; its new layers and units "
                 "ramp in over %lld steps per stage from that run's step 0 (recorded in its %s; another command "
                 "runs it whole, every m = 1)\n", written.c_str(), (long long)record["ramp"]["steps"].get<int64_t>(),
                 CheckpointFiles::growth);
  if (learned && learned->steps > 0)
    std::fprintf(stderr, "lingua grow: G_learn trained its map for %lld steps on %s (loss %.4f -> %.4f, %lld tokens "
                 "of %d rank(s)' data after the source's; the checkpoint's data reads on after them)\n",
                 (long long)learned->steps, c.device.c_str(), learned->first_loss, learned->last_loss,
                 (long long)learned->tokens, learned->ranks);
  return 0;
}

}  // namespace lingua::app
