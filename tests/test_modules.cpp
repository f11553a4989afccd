// Module tokens end to end (issue 15): a base model trained on one corpus, then a module trained
// on another with create_module_name on the frozen base: every base weight bitwise unchanged, only
// the module has optimizer state, resume is bitwise, the module lowers the new domain's loss and,
// disabled, leaves the base's outputs bitwise; `lingua modules` lists, adds, removes, renames,
// enables and disables modules into new checkpoints; generate and eval take modules=.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/core/cuda.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/eval/validation.h"
#include "lingua/model/module_tokens.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
using namespace lingua::test_e2e;

namespace {

// A second domain: sentences of other words (with the letters the toy corpus never uses).
fs::path make_other_corpus(const std::string& name) {
  fs::path root = temp_dir(name + "_other") / "data";
  fs::create_directories(root / "quiz");
  std::mt19937 g(2);
  const char* a[] = {"zebra", "quokka", "oryx", "yak"};
  const char* b[] = {"quizzes", "vexes", "zaps", "jinxes"};
  for (int c = 0; c < 2; ++c) {
    std::ofstream f(root / "quiz" / ("quiz.chunk.0" + std::to_string(c) + ".jsonl"));
    for (int d = 0; d < 60; ++d) {
      std::string text;
      for (int s = 0; s < 6; ++s) text += std::string("the ") + a[g() % 4] + " " + b[g() % 4] + " a " + a[g() % 4] + ". ";
      f << nlohmann::json({{"text", text}}).dump() << "\n";
    }
  }
  std::ofstream v(root / "quiz" / "quiz.val.jsonl");
  for (int d = 0; d < 4; ++d) v << nlohmann::json({{"text", "the yak zaps a zebra. the oryx vexes a quokka."}}).dump() << "\n";
  return root;
}

TrainConfig module_config(const fs::path& data, const fs::path& dump, const std::string& base_ckpt) {
  TrainConfig c = tiny_config(data, dump);
  c.data.sources = {{"quiz", 1.0}};
  c.steps = 12;
  c.checkpoint.dump.every = 4;
  c.checkpoint.eval.every = 0;
  c.checkpoint.init_ckpt_path = base_ckpt;
  c.model.module_seq_len = 4;
  c.model.module_agg = "avg";
  c.model.create_module_name = "quiz";
  c.optim.lr = 1e-2;
  c.resolve_defaults();  // (adds the created module to model.modules, as a parsed config does)
  return c;
}

std::map<std::string, std::vector<float>> weights_of(const std::string& dir) {
  LoadedModel m = load_model(dir);
  std::map<std::string, std::vector<float>> w;
  for (int id : m.model->params().ids()) w[m.model->params().info(id).name] = m.model->params().host_param(id);
  return w;
}

std::vector<float> logits(const std::string& dir, const std::vector<int32_t>& tok,
                          std::optional<std::vector<std::string>> modules = std::nullopt) {
  LoadedModel m = load_model(dir, "", "cpu", [&](TrainConfig& c) {
    if (modules) c.model.enabled_modules = *modules;
  });
  std::vector<float> out(tok.size() * m.model->dims().vocab);
  m.exec->forward_logits(tok.data(), (int)tok.size(), out.data());
  return out;
}

double val_loss(const std::string& dir, const fs::path& data, const std::string& source,
                std::optional<std::vector<std::string>> modules = std::nullopt) {
  LoadedModel m = load_model(dir, "", "cpu", [&](TrainConfig& c) {
    if (modules) c.model.enabled_modules = *modules;
  });
  DataConfig d = m.config.data;
  d.root_dir = data.string();
  d.sources = {{source, 1.0}};
  return evaluate_validation(*m.exec, *m.tokenizer, d, 0).at(source).nll_per_token();
}

struct Trained {
  fs::path toy, quiz, base_dump, base_ckpt;
};

// One base model for the tests of this file (trained once per process).
const Trained& trained_base() {
  static Trained t = [] {
    Trained r;
    r.toy = make_corpus("mod");
    r.quiz = make_other_corpus("mod");
    r.base_dump = temp_dir("mod_base");
    TrainHooks quiet;
    quiet.quiet = true;
    train(tiny_config(r.toy, r.base_dump), quiet);
    r.base_ckpt = r.base_dump / "checkpoints" / checkpoint_dir_name(20);
    return r;
  }();
  return t;
}

}  // namespace

TEST(ModulesTraining, OnlyTheModuleLearnsAndTheBaseStaysBitwise) {
  const Trained& t = trained_base();
  ASSERT_TRUE(is_complete_checkpoint(t.base_ckpt.string()));
  const auto base_files = snapshot(t.base_dump);
  const fs::path dump = temp_dir("mod_run");
  TrainHooks quiet;
  quiet.quiet = true;
  const TrainConfig cfg = module_config(t.quiz, dump, t.base_ckpt.string());
  EXPECT_EQ(cfg.model.modules, (std::vector<std::string>{"quiz"}));
  const TrainResult res = train(cfg, quiet);
  ASSERT_EQ(res.final_step, 12);
  EXPECT_LT(res.losses.back(), res.losses.front());
  const std::string last = (dump / "checkpoints" / checkpoint_dir_name(12)).string();
  const auto base = weights_of(t.base_ckpt.string()), after = weights_of(last);
  int module_tensors = 0;
  for (auto& [name, w] : after) {
    std::string module;
    if (is_module_param(name, &module)) {
      EXPECT_EQ(module, "quiz");
      ++module_tensors;
      continue;
    }
    ASSERT_TRUE(base.count(name)) << name;
    EXPECT_EQ(w, base.at(name)) << name << " changed: the base must stay frozen";
  }
  EXPECT_EQ(module_tensors, 2);  // avg: a block in each of the 2 layers
  // Only the module has optimizer state.
  SafetensorsFile opt = SafetensorsFile::open(last + "/" + CheckpointFiles::optimizer);
  int moments = 0;
  for (const std::string& name : opt.names()) {
    EXPECT_NE(name.find(".modules.quiz"), std::string::npos) << name;
    ++moments;
  }
  EXPECT_EQ(moments, 4);
  // The module learned the new domain; turned off, the model is the base model bitwise.
  const double base_quiz = val_loss(t.base_ckpt.string(), t.quiz, "quiz");
  const double with = val_loss(last, t.quiz, "quiz"), without = val_loss(last, t.quiz, "quiz", std::vector<std::string>{});
  EXPECT_LT(with, base_quiz - 0.05) << "the module lowers the new domain's loss";
  EXPECT_EQ(without, base_quiz);
  EXPECT_EQ(val_loss(last, t.toy, "toy", std::vector<std::string>{}), val_loss(t.base_ckpt.string(), t.toy, "toy"));
  const std::vector<int32_t> tok = {'t', 'h', 'e', ' ', 'w', 'h', 'a', 'l', 'e'};
  EXPECT_EQ(logits(last, tok, std::vector<std::string>{}), logits(t.base_ckpt.string(), tok));
  EXPECT_NE(logits(last, tok), logits(t.base_ckpt.string(), tok));
  EXPECT_EQ(snapshot(t.base_dump), base_files) << "the base checkpoint is never written to";

  // Resume: stopped after step 6 (checkpoint at 4), then resumed: bitwise the uninterrupted run.
  const fs::path dump2 = temp_dir("mod_resume");
  TrainHooks crash = quiet;
  crash.after_step = [](int64_t step) { return step < 6; };
  train(module_config(t.quiz, dump2, t.base_ckpt.string()), crash);
  train(module_config(t.quiz, dump2, t.base_ckpt.string()), quiet);
  EXPECT_EQ(weights_of((dump2 / "checkpoints" / checkpoint_dir_name(12)).string()), after);
}

TEST(ModulesTraining, CreatingAModuleNeedsABase) {
  const Trained& t = trained_base();
  TrainConfig cfg = module_config(t.quiz, temp_dir("mod_nobase"), "");
  TrainHooks quiet;
  quiet.quiet = true;
  const std::string err = error_of([&] { train(cfg, quiet); });
  EXPECT_NE(err.find("checkpoint.init_ckpt_path"), std::string::npos) << err;
}

TEST(ModulesCli, ListAddRemoveRenameEnableDisable) {
  const Trained& t = trained_base();
  const fs::path dump = temp_dir("mod_cli_run");
  TrainHooks quiet;
  quiet.quiet = true;
  TrainConfig cfg = module_config(t.quiz, dump, t.base_ckpt.string());
  cfg.steps = 4;
  train(cfg, quiet);
  const std::string ck = (dump / "checkpoints" / checkpoint_dir_name(4)).string();
  const auto files = snapshot(dump);
  const std::vector<int32_t> tok = {'a', ' ', 's', 'a', 'i', 'l', 'o', 'r'};
  const std::vector<float> base = logits(t.base_ckpt.string(), tok), on = logits(ck, tok);

  auto [rc, out] = run_cli("modules list ckpt=" + dump.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("1 module, module_seq_len 4, module_agg avg"), std::string::npos) << out;
  EXPECT_NE(out.find("quiz"), std::string::npos) << out;
  EXPECT_NE(out.find("yes"), std::string::npos) << out;
  EXPECT_NE(out.find("0-1"), std::string::npos) << out;

  // disable: the base model's logits, bitwise; enable again: the module's.
  const fs::path off = temp_dir("mod_cli_off");
  std::tie(rc, out) = run_cli("modules disable ckpt=" + ck + " name=quiz out=" + off.string());
  ASSERT_EQ(rc, 0) << out;
  const std::string off_ck = (off / checkpoint_dir_name(4)).string();
  EXPECT_EQ(logits(off_ck, tok), base);
  std::tie(rc, out) = run_cli("modules list ckpt=" + off_ck);
  EXPECT_NE(out.find("no"), std::string::npos) << out;
  const fs::path back = temp_dir("mod_cli_on");
  std::tie(rc, out) = run_cli("modules enable ckpt=" + off_ck + " name=quiz out=" + back.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(logits((back / checkpoint_dir_name(4)).string(), tok), on);

  // rename: the same function under another name; add: a second module (enabled, so the function
  // changes); remove it again: the function of before.
  const fs::path ren = temp_dir("mod_cli_ren");
  std::tie(rc, out) = run_cli("modules rename ckpt=" + ck + " name=quiz to=animals out=" + ren.string());
  ASSERT_EQ(rc, 0) << out;
  const std::string ren_ck = (ren / checkpoint_dir_name(4)).string();
  EXPECT_EQ(logits(ren_ck, tok), on);
  EXPECT_EQ(weights_of(ren_ck).at(module_param_name(1, "animals")), weights_of(ck).at(module_param_name(1, "quiz")));
  const fs::path add = temp_dir("mod_cli_add");
  std::tie(rc, out) = run_cli("modules add ckpt=" + ren_ck + " name=zoo out=" + add.string());
  ASSERT_EQ(rc, 0) << out;
  const std::string add_ck = (add / checkpoint_dir_name(4)).string();
  EXPECT_NE(logits(add_ck, tok), on);
  EXPECT_EQ(logits(add_ck, tok, std::vector<std::string>{"animals"}), on);
  EXPECT_EQ(logits(add_ck, tok, std::vector<std::string>{}), base);
  const fs::path rm = temp_dir("mod_cli_rm");
  std::tie(rc, out) = run_cli("modules remove ckpt=" + add_ck + " name=zoo out=" + rm.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(logits((rm / checkpoint_dir_name(4)).string(), tok), on);
  EXPECT_FALSE(weights_of((rm / checkpoint_dir_name(4)).string()).count(module_param_name(0, "zoo")));

  // A base model without modules takes its first with seq_len.
  const fs::path first = temp_dir("mod_cli_first");
  std::tie(rc, out) = run_cli("modules add ckpt=" + t.base_ckpt.string() + " name=x out=" + first.string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("'seq_len'"), std::string::npos) << out;
  std::tie(rc, out) =
      run_cli("modules add ckpt=" + t.base_ckpt.string() + " name=x seq_len=3 agg=sum out=" + first.string());
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_cli("modules list ckpt=" + first.string());
  EXPECT_NE(out.find("module_seq_len 3, module_agg sum"), std::string::npos) << out;

  // Errors name the problem; the original is never written to.
  std::tie(rc, out) = run_cli("modules remove ckpt=" + ck + " name=nope out=" + temp_dir("mod_x").string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("no module 'nope' (it holds quiz)"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("modules frobnicate ckpt=" + ck);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("valid: list, add"), std::string::npos) << out;
  EXPECT_EQ(snapshot(dump), files);

  // generate and eval take modules=.
  std::tie(rc, out) = run_cli("generate ckpt=" + ck + " prompt='the yak' max_gen_len=4 temperature=0 modules=[]");
  EXPECT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_cli("eval ckpt=" + ck + " root_dir=" + t.quiz.string() + " modules=quiz");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("avg_seqlen"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("eval ckpt=" + ck + " root_dir=" + t.quiz.string() + " modules=nope");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("no module 'nope'"), std::string::npos) << out;
}

// Training with module tokens captured as a CUDA graph equals eager training bitwise, for joint
// training and for a module on the frozen base.
TEST(ModulesCuda, GraphStepsEqualEagerBitwise) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  for (bool frozen : {false, true}) {
    ModelConfig mc = graph_test_model(3);
    mc.modules = {"x", "w"};
    mc.module_seq_len = 7;
    mc.module_agg = "mean";
    if (frozen) mc.create_module_name = "w";
    const auto ids = graph_test_ids();
    StepsRun eager = run_steps_on_gpu(mc, graph_test_optim(), ids, false, 4);
    StepsRun graph = run_steps_on_gpu(mc, graph_test_optim(), ids, true, 4);
    EXPECT_TRUE(graph.graph_in_use);
    EXPECT_GE(graph.captures, 1);
    EXPECT_EQ(graph.losses, eager.losses) << "frozen " << frozen;
    EXPECT_EQ(graph.weights, eager.weights) << "frozen " << frozen;
    EXPECT_EQ(graph.moments, eager.moments) << "frozen " << frozen;
  }
}
