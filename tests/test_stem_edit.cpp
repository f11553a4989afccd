// Knowledge editing for STEM (SPEC §2): stem_edit_rows moves exactly the chosen rows of exactly the
// chosen layers; after an edit the FFN output at positions of token A is the unedited model's
// output computed with B's rows; `lingua stem-edit` writes a new, loadable checkpoint and never
// touches the original.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/core/arena.h"
#include "lingua/data/tokenizer.h"
#include "lingua/generate/generate.h"
#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"
#include "lingua/model/module.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/model/ffn/stem_edit.h"
#include "lingua/model/transformer.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace lingua;
using namespace lingua::test_e2e;

namespace {

constexpr int kVocab = 20;

ModelConfig tiny_stem_model(const std::string& ffn = "stem") {
  ModelConfig c;
  c.dim = 16;
  c.n_layers = 3;  // STEM layers 1 and 2 by default
  c.n_heads = 2;
  c.multiple_of = 8;
  c.vocab_size = kVocab;
  c.max_seqlen = 16;
  c.ffn = ffn;
  c.seed = 7;
  return c;
}

std::unique_ptr<Transformer> make_model(const ModelConfig& c) {
  return std::make_unique<Transformer>(c, resolve_dims(c, kVocab));
}

std::vector<float> weights(const Transformer& m) { return m.params().host_values(); }

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The weights `before` would have after moving rows in the tables of `layers` (the spec of the edit).
std::vector<float> expected_after(const ParamStore& s, std::vector<float> w, int32_t target, int32_t source,
                                  StemEditMode mode, const std::vector<int>& layers) {
  for (int l : layers) {
    const ParamInfo& p = s.info(s.index(stem_table_name(l)));
    const int64_t h = p.shape[1];
    float* a = w.data() + p.offset + target * h;
    float* b = w.data() + p.offset + source * h;
    std::vector<float> ra(a, a + h), rb(b, b + h);
    std::copy(rb.begin(), rb.end(), a);
    if (mode == StemEditMode::swap) std::copy(ra.begin(), ra.end(), b);
  }
  return w;
}

}  // namespace

TEST(StemEdit, CopyAndSwapMoveExactlyTheChosenRows) {
  const ModelConfig cfg = tiny_stem_model();
  const int32_t A = 3, B = 11;
  struct Case {
    StemEditMode mode;
    std::vector<int> layers, expect_layers;
  };
  for (const Case& k : {Case{StemEditMode::copy, {}, {1, 2}}, Case{StemEditMode::copy, {2}, {2}},
                        Case{StemEditMode::swap, {}, {1, 2}}, Case{StemEditMode::swap, {1}, {1}}}) {
    SCOPED_TRACE(std::string(stem_edit_mode_name(k.mode)) + " layers " + std::to_string(k.layers.size()));
    auto m = make_model(cfg);
    const std::vector<float> before = weights(*m);
    const std::vector<float> expect = expected_after(m->params(), before, A, B, k.mode, k.expect_layers);
    ASSERT_FALSE(bitwise_equal(before, expect));  // the edit changes something
    EXPECT_EQ(stem_edit_rows(*m, A, B, k.mode, k.layers), k.expect_layers);
    const std::vector<float> after = weights(*m);
    EXPECT_TRUE(bitwise_equal(after, expect));
    // Spelled out for one layer: A's row now holds B's old row.
    const ParamStore& s = m->params();
    const ParamInfo& t = s.info(s.index(stem_table_name(k.expect_layers[0])));
    const int64_t h = t.shape[1];
    EXPECT_EQ(0, std::memcmp(&after[t.offset + A * h], &before[t.offset + B * h], h * sizeof(float)));
    const int32_t b_row_from = k.mode == StemEditMode::copy ? B : A;
    EXPECT_EQ(0, std::memcmp(&after[t.offset + B * h], &before[t.offset + b_row_from * h], h * sizeof(float)));
    // Count what changed: exactly the rows of the edited layers (2 rows a layer for swap, 1 for copy).
    int64_t changed = 0;
    for (size_t i = 0; i < before.size(); ++i) changed += std::memcmp(&before[i], &after[i], sizeof(float)) != 0;
    const int64_t rows = (k.mode == StemEditMode::copy ? 1 : 2) * (int64_t)k.expect_layers.size();
    EXPECT_EQ(changed, rows * h);
  }
}

TEST(StemEdit, ErrorsLeaveTheModelUnchanged) {
  auto m = make_model(tiny_stem_model());
  const std::vector<float> before = weights(*m);
  std::string e = error_of([&] { stem_edit_rows(*m, 3, 4, StemEditMode::copy, {0}); });
  EXPECT_NE(e.find("layer 0 is not a STEM layer"), std::string::npos) << e;
  EXPECT_NE(e.find("[1, 2]"), std::string::npos) << e;
  e = error_of([&] { stem_edit_rows(*m, 3, 4, StemEditMode::swap, {2, 7}); });
  EXPECT_NE(e.find("layer 7 is not a STEM layer"), std::string::npos) << e;
  e = error_of([&] { stem_edit_rows(*m, 3, 4, StemEditMode::swap, {2, 2}); });
  EXPECT_NE(e.find("listed twice"), std::string::npos) << e;
  e = error_of([&] { stem_edit_rows(*m, kVocab, 4, StemEditMode::copy); });
  EXPECT_NE(e.find("target token id 20 is outside the vocabulary [0, 20)"), std::string::npos) << e;
  e = error_of([&] { stem_edit_rows(*m, 3, -1, StemEditMode::copy); });
  EXPECT_NE(e.find("source token id -1"), std::string::npos) << e;
  e = error_of([&] { stem_edit_rows(*m, 5, 5, StemEditMode::swap); });
  EXPECT_NE(e.find("same token"), std::string::npos) << e;
  EXPECT_TRUE(bitwise_equal(weights(*m), before));
  auto dense = make_model(tiny_stem_model("swiglu"));
  e = error_of([&] { stem_edit_rows(*dense, 3, 4, StemEditMode::copy); });
  EXPECT_NE(e.find("no STEM layers"), std::string::npos) << e;
  EXPECT_EQ(stem_edit_mode_name(parse_stem_edit_mode("swap")), std::string("swap"));
  e = error_of([&] { parse_stem_edit_mode("move"); });
  EXPECT_NE(e.find("copy, swap"), std::string::npos) << e;
}

TEST(StemEdit, SingleTokenId) {
  BytesTokenizer tok;
  EXPECT_EQ(single_token_id(tok, "a", "target"), 97);
  std::string e = error_of([&] { single_token_id(tok, "ab", "target"); });
  EXPECT_NE(e.find("'target'"), std::string::npos) << e;
  EXPECT_NE(e.find("\"ab\" is 2 tokens [97, 98]"), std::string::npos) << e;
  e = error_of([&] { single_token_id(tok, "", "source"); });
  EXPECT_NE(e.find("'source'"), std::string::npos) << e;
  EXPECT_NE(e.find("0 tokens"), std::string::npos) << e;
}

namespace {

// One STEM layer's FeedForward in a store of its own, its weights copied by name from a model.
class LayerFfn {
 public:
  LayerFfn(const ModelConfig& cfg, const ModelDims& d, int layer, const ParamStore& from) : dim_(d.dim) {
    ffn_ = make_ffn("stem", FfnBuildArgs{store_, d, cfg, layer, "layers." + std::to_string(layer) + ".feed_forward."});
    store_.finalize();
    bool has_table = false;
    for (int id : store_.ids()) {
      const ParamInfo& p = store_.info(id);
      has_table |= p.name == stem_table_name(layer);
      store_.set_param(id, from.host_param(from.index(p.name)).data());
    }
    LINGUA_CHECK(has_table, "layer ", layer, " is not a STEM layer");
  }
  // ffn(x) for the tokens (one sequence, no residual).
  std::vector<float> forward(const std::vector<float>& x, const std::vector<int32_t>& tokens) {
    const int64_t n = (int64_t)tokens.size();
    Arena scratch(Device::cpu), saved(Device::cpu);
    scratch.reserve(ffn_->saved_bytes(n, DType::f32) + ffn_->scratch_bytes(n, DType::f32));
    StepContext ctx;
    ctx.saved = &saved;
    ctx.scratch = &scratch;
    ctx.act = DType::f32;
    ctx.tokens = Tensor(tokens.data(), {n});
    ctx.seq = SeqLayout{1, (int)n, 0};
    ctx.save_for_backward = false;
    std::vector<float> out(n * dim_, -1.0f);
    ffn_->forward(Tensor(x.data(), {n, dim_}), Tensor(), Tensor(out.data(), {n, dim_}), ctx);
    return out;
  }

 private:
  int64_t dim_;
  ParamStore store_;
  std::unique_ptr<FeedForward> ffn_;
};

std::vector<int32_t> substitute(std::vector<int32_t> t, int32_t from, int32_t to, bool both_ways) {
  for (auto& id : t) {
    if (id == from) id = to;
    else if (both_ways && id == to) id = from;
  }
  return t;
}

bool rows_equal(const std::vector<float>& a, const std::vector<float>& b, int64_t row, int64_t dim) {
  return std::memcmp(&a[row * dim], &b[row * dim], dim * sizeof(float)) == 0;
}

}  // namespace

// The key property, at the FFN level: after the edit, the FFN output at positions of A is
// what the unedited model computes with B there (copy); with swap, also B's positions get A's.
TEST(StemEdit, EditedFfnAtTokenAEqualsUneditedFfnWithTokenB) {
  const ModelConfig cfg = tiny_stem_model();
  const ModelDims d = resolve_dims(cfg, kVocab);
  const int32_t A = 3, B = 7;
  const std::vector<int32_t> tokens = {1, 3, 5, 7, 3, 0, 3, 11, 7, 19, 3, 2};  // A at 1, 4, 6, 10; B at 3, 8
  const int64_t n = (int64_t)tokens.size();
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(n * d.dim);
  for (auto& v : x) v = nd(g);

  auto orig = make_model(cfg);
  for (StemEditMode mode : {StemEditMode::copy, StemEditMode::swap}) {
    SCOPED_TRACE(stem_edit_mode_name(mode));
    const bool swap = mode == StemEditMode::swap;
    auto edited = make_model(cfg);
    ASSERT_TRUE(bitwise_equal(weights(*edited), weights(*orig)));
    ASSERT_EQ(stem_edit_rows(*edited, A, B, mode, {2}), std::vector<int>{2});
    const std::vector<int32_t> subst = substitute(tokens, A, B, swap);

    // Layer 2 (edited): equal at every position, bitwise, to the unedited FFN with B (and A) substituted.
    LayerFfn ed2(cfg, d, 2, edited->params()), un2(cfg, d, 2, orig->params());
    const std::vector<float> y_edit = ed2.forward(x, tokens);
    const std::vector<float> y_ref = un2.forward(x, subst);
    EXPECT_TRUE(bitwise_equal(y_edit, y_ref));
    // Before the edit the outputs at A's (and, for swap, B's) positions are different: the test can fail.
    const std::vector<float> y_before = un2.forward(x, tokens);
    for (int64_t i = 0; i < n; ++i) {
      const bool moved = tokens[i] == A || (swap && tokens[i] == B);
      EXPECT_EQ(rows_equal(y_before, y_ref, i, d.dim), !moved) << "position " << i;
      EXPECT_EQ(rows_equal(y_before, y_edit, i, d.dim), !moved) << "position " << i;
    }

    // Layer 1 (a STEM layer not chosen): unchanged.
    LayerFfn ed1(cfg, d, 1, edited->params()), un1(cfg, d, 1, orig->params());
    EXPECT_TRUE(bitwise_equal(ed1.forward(x, tokens), un1.forward(x, tokens)));
    EXPECT_FALSE(bitwise_equal(un1.forward(x, tokens), un1.forward(x, subst)));

    // The whole model: a sequence without A (nor B for swap) gives bitwise the same logits.
    const std::vector<int32_t> other = {1, 5, 0, 11, 19, 2, 4, 6};
    std::vector<float> l_orig(other.size() * kVocab), l_edit(other.size() * kVocab);
    Executor run_orig(*orig), run_edit(*edited);
    run_orig.forward_logits(other.data(), (int)other.size(), l_orig.data());
    run_edit.forward_logits(other.data(), (int)other.size(), l_edit.data());
    EXPECT_TRUE(bitwise_equal(l_orig, l_edit));
    // ... and one with A does change.
    run_orig.forward_logits(tokens.data(), 8, l_orig.data());
    run_edit.forward_logits(tokens.data(), 8, l_edit.data());
    EXPECT_FALSE(bitwise_equal(l_orig, l_edit));
  }

  // All STEM layers (the default), copy: the same property in every one of them.
  auto edited = make_model(cfg);
  ASSERT_EQ(stem_edit_rows(*edited, A, B, StemEditMode::copy), (std::vector<int>{1, 2}));
  const std::vector<int32_t> subst = substitute(tokens, A, B, false);
  for (int layer : stem_layers(cfg)) {
    LayerFfn ed(cfg, d, layer, edited->params()), un(cfg, d, layer, orig->params());
    EXPECT_TRUE(bitwise_equal(ed.forward(x, tokens), un.forward(x, subst))) << "layer " << layer;
  }
}

// ---- The command, end to end ----

namespace {

TrainConfig tiny_stem_config(const fs::path& data, const fs::path& dump) {
  TrainConfig c = tiny_config(data, dump);
  c.name = "tiny_stem";
  c.steps = 4;
  c.grad_acc_steps = 1;
  c.model.n_layers = 3;  // STEM layers 1 and 2
  c.model.ffn = "stem";
  c.optim.warmup = 2;
  c.checkpoint.dump.every = 4;
  c.checkpoint.eval.every = 0;
  c.logging.freq = 2;
  return c;
}

// Every file under dir (relative path -> bytes).

std::vector<float> row(const Transformer& m, int layer, int32_t id) {
  const ParamStore& s = m.params();
  const int p = s.index(stem_table_name(layer));
  const std::vector<float> t = s.host_param(p);
  const int64_t h = s.info(p).shape[1];
  return std::vector<float>(t.begin() + id * h, t.begin() + (id + 1) * h);
}

}  // namespace

TEST(StemEditCli, EditsIntoANewCheckpointAndLeavesTheOriginal) {
  const fs::path data = make_corpus("cli");
  const fs::path dump = temp_dir("cli_dump");
  TrainHooks quiet;
  quiet.quiet = true;
  train(tiny_stem_config(data, dump), quiet);
  const fs::path ckroot = dump / "checkpoints";
  const std::string step_dir = (ckroot / checkpoint_dir_name(4)).string();
  ASSERT_TRUE(is_complete_checkpoint(step_dir));
  const auto original_files = snapshot(dump);
  const int32_t A = 'a', B = 'e';

  auto [rc, out] = run_cli("stem-edit --help");
  EXPECT_EQ(rc, 0);
  for (auto k : {"ckpt", "target", "source", "mode = copy", "layers", "out", "tokenizer_path"})
    EXPECT_NE(out.find(k), std::string::npos) << k << "\n" << out;

  // Copy in layer 2 only, from the dump_dir (its newest checkpoint).
  const fs::path edited = temp_dir("cli_edited") / "ckpts";
  std::tie(rc, out) =
      run_cli("stem-edit ckpt=" + dump.string() + " target=a source=e layers='[2]' out=" + edited.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("lingua stem-edit: copied the rows of token 101 (\"e\") into token 97 (\"a\") in STEM layers [2]"),
            std::string::npos)
      << out;
  const fs::path new_step = edited / checkpoint_dir_name(4);
  ASSERT_TRUE(is_complete_checkpoint(new_step.string()));
  LoadedModel o = load_model(step_dir), e = load_model(edited.string());
  EXPECT_EQ(e.checkpoint_dir, new_step.string());
  EXPECT_EQ(row(*e.model, 2, A), row(*o.model, 2, B));
  EXPECT_EQ(row(*e.model, 2, B), row(*o.model, 2, B));
  EXPECT_EQ(row(*e.model, 1, A), row(*o.model, 1, A));  // layer 1 not chosen
  EXPECT_NE(row(*o.model, 2, A), row(*o.model, 2, B));
  EXPECT_TRUE(bitwise_equal(weights(*e.model),
                            expected_after(o.model->params(), weights(*o.model), A, B, StemEditMode::copy, {2})));
  const nlohmann::json rec = nlohmann::json::parse(read_text_file((new_step / "stem_edit.json").string()));
  EXPECT_EQ(rec["source_checkpoint"], fs::weakly_canonical(step_dir).string());
  EXPECT_EQ(rec["target"]["text"], "a");
  EXPECT_EQ(rec["target"]["id"], A);
  EXPECT_EQ(rec["source"]["id"], B);
  EXPECT_EQ(rec["mode"], "copy");
  EXPECT_EQ(rec["layers"], nlohmann::json({2}));
  EXPECT_EQ(rec["step"], 4);
  // The original: byte for byte as before.
  EXPECT_EQ(snapshot(dump), original_files);

  // The new checkpoint generates.
  std::tie(rc, out) = run_cli("generate ckpt=" + edited.string() + " prompt='the whale' max_gen_len=5 temperature=0");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("=== prompt: the whale"), std::string::npos) << out;

  // Swap in every STEM layer, from the step directory.
  const fs::path swapped = temp_dir("cli_swapped");
  std::tie(rc, out) = run_cli("stem-edit ckpt=" + step_dir + " target=a source=e mode=swap out=" + swapped.string());
  ASSERT_EQ(rc, 0) << out;
  LoadedModel s = load_model(swapped.string());
  for (int l : {1, 2}) {
    EXPECT_EQ(row(*s.model, l, A), row(*o.model, l, B)) << l;
    EXPECT_EQ(row(*s.model, l, B), row(*o.model, l, A)) << l;
  }

  // Errors: multi-token text, the original's directories, an existing step, a bad layer.
  std::tie(rc, out) = run_cli("stem-edit ckpt=" + dump.string() + " target=ab source=e out=" + temp_dir("x1").string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("'target'"), std::string::npos) << out;
  EXPECT_NE(out.find("is 2 tokens"), std::string::npos) << out;
  for (const std::string& bad : {ckroot.string(), step_dir, step_dir + "/sub", dump.string()}) {
    std::tie(rc, out) = run_cli("stem-edit ckpt=" + dump.string() + " target=a source=e out=" + bad);
    EXPECT_EQ(rc, 1) << bad;
    EXPECT_NE(out.find("never modified"), std::string::npos) << out;
  }
  std::tie(rc, out) = run_cli("stem-edit ckpt=" + dump.string() + " target=a source=e out=" + edited.string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("already exists"), std::string::npos) << out;
  const fs::path x2 = temp_dir("x2");
  std::tie(rc, out) = run_cli("stem-edit ckpt=" + dump.string() + " target=a source=e layers='[0]' out=" + x2.string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("layer 0 is not a STEM layer (the STEM layers are [1, 2])"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(x2 / checkpoint_dir_name(4)));
  std::tie(rc, out) = run_cli("stem-edit ckpt=" + dump.string() + " target=a source=e");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("'out'"), std::string::npos) << out;
  EXPECT_EQ(snapshot(dump), original_files);
}

// Inspection: the nearest rows by cosine, most similar first, the token itself left out.
TEST(StemNearest, RanksRowsByCosineSimilarity) {
  const ModelConfig c = tiny_stem_model();
  auto m = make_model(c);
  ParamStore& s = m->params();
  const int p = s.index(stem_table_name(2));
  const int64_t h = s.info(p).shape[1];
  std::vector<float> t = s.host_param(p);
  auto set_row = [&](int id, const std::function<float(int64_t)>& f) {
    for (int64_t j = 0; j < h; ++j) t[(size_t)(id * h + j)] = f(j);
  };
  auto base = [](int64_t j) { return (float)std::sin(0.7 * (double)j + 1.0); };
  set_row(3, base);
  set_row(9, [&](int64_t j) { return 2.5f * base(j); });                    // cosine 1
  set_row(5, [&](int64_t j) { return base(j) + (j % 3 == 0 ? 0.3f : 0.f); });  // close
  set_row(12, [&](int64_t j) { return -base(j); });                         // cosine -1
  s.set_param(p, t.data());
  const std::vector<StemNeighbour> near = stem_nearest(*m, 2, 3, 3);
  ASSERT_EQ(near.size(), 3u);
  EXPECT_EQ(near[0].id, 9);
  EXPECT_NEAR(near[0].cosine, 1.0, 1e-9);
  EXPECT_EQ(near[1].id, 5);
  EXPECT_GT(near[1].cosine, 0.9);
  EXPECT_GE(near[1].cosine, near[2].cosine);
  for (const StemNeighbour& n : near) EXPECT_NE(n.id, 3);
  // The whole vocabulary but the token, the last being token 12 (cosine -1).
  const std::vector<StemNeighbour> all = stem_nearest(*m, 2, 3, 100);
  ASSERT_EQ(all.size(), (size_t)kVocab - 1);
  EXPECT_EQ(all.back().id, 12);
  EXPECT_NEAR(all.back().cosine, -1.0, 1e-9);
  // Each cosine is the one computed here.
  for (const StemNeighbour& n : all) {
    double dot = 0, a = 0, b = 0;
    for (int64_t j = 0; j < h; ++j) {
      const double x = t[(size_t)(3 * h + j)], y = t[(size_t)(n.id * h + j)];
      dot += x * y, a += x * x, b += y * y;
    }
    EXPECT_NEAR(n.cosine, dot / std::sqrt(a * b), 1e-12) << n.id;
  }
  EXPECT_NE(error_of([&] { stem_nearest(*m, 0, 3, 3); }).find("layer 0 is not a STEM layer"), std::string::npos);
  EXPECT_NE(error_of([&] { stem_nearest(*m, 2, kVocab, 3); }).find("outside the vocabulary"), std::string::npos);
  auto dense = make_model(tiny_stem_model("swiglu"));
  EXPECT_NE(error_of([&] { stem_nearest(*dense, 1, 3, 3); }).find("no STEM layers"), std::string::npos);
}

TEST(StemNearestCli, PrintsTheNeighboursOfEachLayer) {
  const fs::path data = make_corpus("nearest_cli");
  const fs::path dump = temp_dir("nearest_cli_dump");
  TrainHooks quiet;
  quiet.quiet = true;
  train(tiny_stem_config(data, dump), quiet);
  auto [rc, out] = run_cli("stem-nearest ckpt=" + dump.string() + " token=a k=4");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("STEM rows nearest to token 97 \"a\""), std::string::npos) << out;
  LoadedModel m = load_model(dump.string());
  for (int l : stem_layers_of(*m.model)) {
    std::string line = "layer " + std::to_string(l) + ":";
    for (const StemNeighbour& n : stem_nearest(*m.model, l, 'a', 4)) {
      char cos[32];
      std::snprintf(cos, sizeof cos, " %.3f", n.cosine);
      line += " " + nlohmann::json(m.tokenizer->decode({n.id})).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + cos;
    }
    EXPECT_NE(out.find(line + "\n"), std::string::npos) << line << "\n" << out;
  }
  std::tie(rc, out) = run_cli("stem-nearest ckpt=" + dump.string() + " token=ab");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("token"), std::string::npos) << out;
}
