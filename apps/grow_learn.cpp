// lingua grow op=learn: G_learn's map trained on the data after the source run's (grow_learn.h).
#include "apps/grow_learn.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/train_state.h"
#include "lingua/core/cuda.h"
#include "lingua/data/loader.h"
#include "lingua/data/tokenizer.h"
#include "lingua/exec/growth_learn.h"

namespace fs = std::filesystem;

namespace lingua::app {

GrowLearnResult grow_learned(const LoadedModel& src, Transformer& target, const DataConfig& data,
                             const std::vector<int>& list, const GrowLearnOptions& o) {
  LINGUA_CHECK(o.steps >= 0, "config key 'learn_steps' is ", o.steps, ": op=learn takes >= 0 Adam steps on its "
               "map (0: the map's start, G_split or G_stack)");
  LINGUA_CHECK(std::isfinite(o.lr) && o.lr > 0, "config key 'learn_lr' is ", o.lr, ": op=learn needs a learning "
               "rate > 0");
  const Device device = resolve_device(o.device);  // (a missing GPU fails here, naming the key)
  const std::string& dir = src.checkpoint_dir;
  const int ranks = checkpoint_rank_count(dir);
  LINGUA_CHECK(ranks > 0, "op=learn: the source checkpoint ", dir, " has no data-loader state (",
               CheckpointFiles::train_state(0), "): the map reads the data after the source run's; grow a training "
               "run's checkpoint");
  LINGUA_CHECK(!data.root_dir.empty(), "op=learn trains its map on the target's data, but config key "
               "'data.root_dir' is empty (give target=target.yaml with data.*, or a source whose config has them)");
  LINGUA_CHECK(!data.sources.empty(), "op=learn trains its map on the target's data, but config key "
               "'data.sources' is empty (give target=target.yaml with data.*, or a source whose config has them)");
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(data.tokenizer);
  LINGUA_CHECK(tok->n_words() == src.tokenizer->n_words(), "op=learn: config key 'data.tokenizer' gives ",
               tok->n_words(), " words, the source model's tokenizer ", src.tokenizer->n_words());
  // Every rank's loader, restored from its train state: the map reads on from where it stopped.
  std::vector<TrainState> states;
  std::vector<std::unique_ptr<DataLoader>> loaders;
  for (int r = 0; r < ranks; ++r) {
    const std::string path = (fs::path(dir) / CheckpointFiles::train_state(r)).string();
    try {
      states.push_back(parse_train_state(read_text_file(path), path));
      loaders.push_back(std::make_unique<DataLoader>(data, *tok, r, ranks));
      loaders.back()->load_state(states.back().data_loader);
    } catch (const Error& e) {
      fail("op=learn: the map reads the target's data (data.*) on from the source's loader (", path, "): ", e.what());
    }
  }
  target.to_device(device);
  Executor exec(target);
  LearnedGrowth learn(*src.model, target, list, o.seed);
  GrowLearnResult res;
  res.steps = o.steps;
  res.ranks = ranks;
  for (int64_t s = 0; s < o.steps; ++s) {
    std::vector<double> grad;
    double loss = 0;
    for (int r = 0; r < ranks; ++r) {
      const Batch b = loaders[r]->next();
      double l = 0;
      const std::vector<double> d =
          learn.gradient(exec, b.input.data(), b.target.data(), b.batch_size, b.seq_len, &l, ranks);
      if (r == 0) grad = d;
      else
        for (size_t i = 0; i < d.size(); ++i) grad[i] += d[i];
      loss += l;
      res.tokens += (int64_t)b.batch_size * b.seq_len;
    }
    learn.apply_gradient(grad, o.lr);
    loss /= ranks;
    if (s == 0) res.first_loss = loss;
    res.last_loss = loss;
    LINGUA_CHECK(std::isfinite(loss), "op=learn: the map's loss is ", loss, " at step ", s + 1,
                 " (config key 'learn_lr' is ", o.lr, ": try a smaller one)");
  }
  for (int r = 0; r < ranks; ++r) {
    states[r].data_loader = loaders[r]->state();
    res.train_states.push_back({CheckpointFiles::train_state(r), train_state_json(states[r])});
  }
  return res;
}

}  // namespace lingua::app
