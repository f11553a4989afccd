// Hugging Face interop (hf_llama.h, hf_export.h, `lingua export-hf` / `import-hf`):
//  - names and the RoPE row order map both ways; config.json <-> ModelConfig, the FFN hidden size
//    of real Llama configs matched exactly, and what lingua lacks (rope_scaling, biases) refused;
//  - an exported directory, read by an independent forward written the way transformers computes
//    Llama (rotate_half RoPE, repeat_kv GQA, HF tensor names), gives lingua's logits: dense with
//    GQA, tied embeddings, a structured FFN (merged), and STEM (its modeling file's semantics);
//  - export then import gives bitwise the same weights (float32) and the same config;
//  - the exported tokenizer.json of the bytes and tiktoken tokenizers gives the original ids, read
//    by lingua's hf tokenizer and by transformers.js (node, when present);
//  - the commands: help, reference logits, errors, the original left untouched.
// The check with transformers itself runs on the GPU machine (scripts/hf_check.py).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/hf_export.h"
#include "lingua/checkpoint/hf_llama.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_checkpoint.h"
#include "lingua/core/bf16.h"
#include "lingua/data/hf_tokenizer.h"
#include "lingua/data/tiktoken.h"
#include "lingua/data/tokenizer_testing.h"
#include "lingua/model/dims.h"
#include "lingua/train/trainer.h"
#include "tests/test_util.h"

using namespace lingua;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

// Llama as transformers computes it, from an HF directory's config.json and float32 weights.
class HfReference {
 public:
  explicit HfReference(const fs::path& dir) : c_(read_json(dir / "config.json")),
                                             f_(SafetensorsFile::open((dir / "model.safetensors").string())) {}
  std::vector<float> logits(const std::vector<int32_t>& ids) const {
    const int T = (int)ids.size(), D = c_["hidden_size"], L = c_["num_hidden_layers"], H = c_["num_attention_heads"],
              KV = c_["num_key_value_heads"], hd = c_["head_dim"], V = c_["vocab_size"];
    const double eps = c_["rms_norm_eps"], theta = c_["rope_theta"];
    std::vector<int> stem_layers = c_.value("stem_layers", std::vector<int>{});
    const std::vector<float> emb = get("model.embed_tokens.weight");
    std::vector<double> x((size_t)T * D), h((size_t)T * D);
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < D; ++d) x[(size_t)t * D + d] = emb[(size_t)ids[t] * D + d];
    auto norm = [&](const std::string& w_name) {
      const std::vector<float> w = get(w_name);
      for (int t = 0; t < T; ++t) {
        double ss = 0;
        for (int d = 0; d < D; ++d) ss += x[(size_t)t * D + d] * x[(size_t)t * D + d];
        const double r = 1.0 / std::sqrt(ss / D + eps);
        for (int d = 0; d < D; ++d) h[(size_t)t * D + d] = x[(size_t)t * D + d] * r * w[d];
      }
    };
    auto matmul = [&](const std::vector<double>& in, int K, const std::string& w_name, int N) {  // in @ W^T
      const std::vector<float> w = get(w_name);
      std::vector<double> out((size_t)T * N, 0.0);
      for (int t = 0; t < T; ++t)
        for (int n = 0; n < N; ++n) {
          double s = 0;
          for (int k = 0; k < K; ++k) s += in[(size_t)t * K + k] * w[(size_t)n * K + k];
          out[(size_t)t * N + n] = s;
        }
      return out;
    };
    auto rotate_half = [&](std::vector<double>& q, int heads) {
      for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < heads; ++hh)
          for (int j = 0; j < hd / 2; ++j) {
            const double inv_freq = 1.0 / std::pow(theta, 2.0 * j / hd), a = t * inv_freq;
            double& q1 = q[((size_t)t * heads + hh) * hd + j];
            double& q2 = q[((size_t)t * heads + hh) * hd + j + hd / 2];
            const double r1 = q1 * std::cos(a) - q2 * std::sin(a), r2 = q2 * std::cos(a) + q1 * std::sin(a);
            q1 = r1, q2 = r2;
          }
    };
    for (int l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      norm(p + "input_layernorm.weight");
      std::vector<double> q = matmul(h, D, p + "self_attn.q_proj.weight", H * hd);
      std::vector<double> k = matmul(h, D, p + "self_attn.k_proj.weight", KV * hd);
      std::vector<double> v = matmul(h, D, p + "self_attn.v_proj.weight", KV * hd);
      rotate_half(q, H);
      rotate_half(k, KV);
      std::vector<double> o((size_t)T * H * hd, 0.0);
      for (int hh = 0; hh < H; ++hh) {
        const int g = hh / (H / KV);  // repeat_kv: each KV head serves H / KV consecutive heads
        for (int t = 0; t < T; ++t) {
          std::vector<double> s((size_t)t + 1);
          double mx = -1e300, sum = 0;
          for (int u = 0; u <= t; ++u) {
            double d = 0;
            for (int j = 0; j < hd; ++j) d += q[((size_t)t * H + hh) * hd + j] * k[((size_t)u * KV + g) * hd + j];
            s[(size_t)u] = d / std::sqrt((double)hd);
            mx = std::max(mx, s[(size_t)u]);
          }
          for (double& e : s) sum += (e = std::exp(e - mx));
          for (int u = 0; u <= t; ++u)
            for (int j = 0; j < hd; ++j)
              o[((size_t)t * H + hh) * hd + j] += s[(size_t)u] / sum * v[((size_t)u * KV + g) * hd + j];
        }
      }
      const std::vector<double> ao = matmul(o, H * hd, p + "self_attn.o_proj.weight", D);
      for (size_t i = 0; i < x.size(); ++i) x[i] += ao[i];
      norm(p + "post_attention_layernorm.weight");
      const int I = c_["intermediate_size"];
      std::vector<double> gate = matmul(h, D, p + "mlp.gate_proj.weight", I), up;
      if (std::find(stem_layers.begin(), stem_layers.end(), l) != stem_layers.end()) {
        const std::vector<float> table = get(p + "mlp.stem_embedding.weight");
        up.resize((size_t)T * I);
        for (int t = 0; t < T; ++t)
          for (int i = 0; i < I; ++i) up[(size_t)t * I + i] = table[(size_t)ids[t] * I + i];
      } else {
        up = matmul(h, D, p + "mlp.up_proj.weight", I);
      }
      for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const std::vector<double> mo = matmul(gate, I, p + "mlp.down_proj.weight", D);
      for (size_t i = 0; i < x.size(); ++i) x[i] += mo[i];
    }
    norm("model.norm.weight");
    const std::vector<double> out =
        matmul(h, D, c_["tie_word_embeddings"].get<bool>() ? "model.embed_tokens.weight" : "lm_head.weight", V);
    return std::vector<float>(out.begin(), out.end());
  }

 private:
  std::vector<float> get(const std::string& name) const {
    const TensorInfo& t = f_.info(name);
    EXPECT_EQ(t.st_dtype, "F32") << name;
    std::vector<float> v((size_t)t.numel());
    f_.read_raw(name, v.data());
    return v;
  }
  json c_;
  SafetensorsFile f_;
};

TrainConfig model_config(const std::string& ffn, bool tied) {
  TrainConfig c;
  c.model.dim = 24;
  c.model.n_layers = 3;
  c.model.n_heads = 6;
  c.model.n_kv_heads = 2;
  c.model.multiple_of = 8;
  c.model.max_seqlen = 32;
  c.model.norm_eps = 1e-5;
  c.model.rope_theta = 500000.0;
  c.model.weight_tying = tied;
  c.model.seed = 11;
  c.model.ffn = ffn;
  c.model.structured.rank = 8;
  c.model.structured.nblocks = 4;
  if (ffn == "stem") c.model.stem_layers = std::vector<int>{0, 2};
  c.data.tokenizer.name = "bytes";
  c.data.seq_len = 32;
  return c;
}

// A checkpoint (root/<step 3>) of a randomly initialised model whose FFNs matter.
std::string make_checkpoint(const TrainConfig& c, const fs::path& root) {
  Transformer m(c.model, resolve_dims(c.model, BytesTokenizer::kWords));
  test_e2e::make_ffns_matter(m, c.model);
  return save_model_checkpoint(root.string(), 3, c, m);
}

std::vector<float> lingua_logits(const std::string& ckpt, const std::vector<int32_t>& ids) {
  LoadedModel m = load_model(ckpt, "", "cpu", [](TrainConfig& t) { t.model.structured.premerge_max_tokens = 0; });
  std::vector<float> out(ids.size() * (size_t)m.model->dims().vocab);
  m.exec->forward_logits(ids.data(), (int)ids.size(), out.data());
  return out;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, (double)std::fabs(got[i] - want[i]));
    scale = std::max(scale, (double)std::fabs(want[i]));
  }
  EXPECT_LT(worst, tol) << what << " (largest logit " << scale << ")";
  EXPECT_GT(scale, 0.1) << what << ": logits too small to show a difference";
}

const std::vector<int32_t> kIds = {256, 'C', 'a', 'l', 'l', ' ', 'm', 'e', ' ', 0xC3, 0xA9, '!', '\n', 7};

}  // namespace

TEST(HfLlama, NamesAndRopeRowsMapBothWays) {
  for (const std::string n : {"tok_embeddings.weight", "norm.weight", "output.weight", "layers.0.attention.wq.weight",
                              "layers.12.attention.wo.weight", "layers.3.feed_forward.w1.weight",
                              "layers.3.feed_forward.w3.weight", "layers.3.feed_forward.w2.weight",
                              "layers.1.attention_norm.weight", "layers.1.ffn_norm.weight",
                              "layers.2.feed_forward.stem_embedding.weight"})
    EXPECT_EQ(lingua_name_of_hf(hf_llama_name(n), "f"), n);
  EXPECT_EQ(hf_llama_name("layers.12.attention.wk.weight"), "model.layers.12.self_attn.k_proj.weight");
  EXPECT_EQ(hf_llama_name("layers.3.feed_forward.w3.weight"), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(lingua_name_of_hf("model.layers.4.self_attn.rotary_emb.inv_freq", "f"), "");
  EXPECT_NE(test_e2e::error_of([] { hf_llama_name("layers.1.feed_forward.w13.a.weight"); }).find("no Hugging Face"),
            std::string::npos);
  EXPECT_NE(test_e2e::error_of([] { lingua_name_of_hf("model.layers.0.mlp.experts.0.weight", "x.safetensors"); })
                .find("x.safetensors: tensor 'model.layers.0.mlp.experts.0.weight'"),
            std::string::npos);
  ModelDims gqa{};
  gqa.n_heads = 6;
  gqa.n_kv_heads = 2;
  EXPECT_EQ(rope_row_heads("layers.0.attention.wq.weight", gqa), 6);
  EXPECT_EQ(rope_row_heads("layers.0.attention.wk.weight", gqa), 2);
  EXPECT_EQ(rope_row_heads("layers.0.attention.wv.weight", gqa), 0);
  EXPECT_EQ(rope_row_heads("layers.0.feed_forward.w1.weight", gqa), 0);

  // 2 heads of 6 rows, 2 columns: HF row j = lingua row 2j, HF row 3 + j = lingua row 2j + 1.
  std::vector<float> w(24);
  for (size_t i = 0; i < w.size(); ++i) w[i] = (float)i;
  std::vector<float> hf = w;
  permute_rope_rows(hf.data(), 2, 6, 2, true);
  const int rows[6] = {0, 2, 4, 1, 3, 5};
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 6; ++r)
      for (int c = 0; c < 2; ++c) EXPECT_EQ(hf[(size_t)(h * 6 + r) * 2 + c], w[(size_t)(h * 6 + rows[r]) * 2 + c]);
  permute_rope_rows(hf.data(), 2, 6, 2, false);
  EXPECT_EQ(hf, w);
}

TEST(HfLlama, ConfigMatchesRealModelsAndRefusesWhatLinguaLacks) {
  // (hidden_size, intermediate_size, heads, kv heads) of Llama 2 7B, Llama 3 8B, TinyLlama, odd ones.
  for (auto [dim, inter, heads, kv] : {std::tuple{4096, 11008, 32, 32}, {4096, 14336, 32, 8}, {2048, 5632, 32, 4},
                                       {24, 64, 6, 2}, {100, 333, 5, 5}, {768, 3072, 12, 12}}) {
    const json j = {{"model_type", "llama"}, {"hidden_size", dim}, {"intermediate_size", inter},
                    {"num_hidden_layers", 2}, {"num_attention_heads", heads}, {"num_key_value_heads", kv},
                    {"vocab_size", 1000}, {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0},
                    {"max_position_embeddings", 64}, {"tie_word_embeddings", true}};
    const ModelConfig c = model_config_from_hf(j, "config.json");
    const ModelDims d = resolve_dims(c, 1000);
    EXPECT_EQ(d.hidden, inter) << dim;
    EXPECT_EQ(d.n_kv_heads, kv);
    EXPECT_EQ(d.head_dim, dim / heads);
    EXPECT_TRUE(d.weight_tying);
    EXPECT_EQ(d.rope_theta, 500000.0);
    const json back = hf_llama_config(c, d, 1, 2, "float32");
    for (auto key : {"hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size",
                     "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings"})
      EXPECT_EQ(back[key], j[key]) << key;
  }
  json j = {{"model_type", "llama"}, {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 2},
            {"num_attention_heads", 4}, {"vocab_size", 100}};
  auto error = [&](json k) {
    return test_e2e::error_of([&] { model_config_from_hf(k, "dir/config.json"); });
  };
  EXPECT_EQ(error(j), "");
  json bad = j;
  bad["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NE(error(bad).find("dir/config.json: key 'rope_scaling'"), std::string::npos) << error(bad);
  bad = j;
  bad["attention_bias"] = true;
  EXPECT_NE(error(bad).find("no biases"), std::string::npos);
  bad = j;
  bad["model_type"] = "mistral";
  EXPECT_NE(error(bad).find("not a Llama model"), std::string::npos);
  bad = j;
  bad.erase("hidden_size");
  EXPECT_NE(error(bad).find("key 'hidden_size' is missing"), std::string::npos);
}

// The exported directory, computed the way transformers does, gives lingua's logits.
TEST(HfExport, IndependentHfForwardGivesLinguasLogits) {
  for (auto [ffn, tied] : {std::pair{"swiglu", false}, {"swiglu", true}, {"lowrank", false}, {"blockshuffle", false},
                           {"stem", false}}) {
    SCOPED_TRACE(std::string(ffn) + (tied ? " tied" : ""));
    const fs::path root = test_e2e::temp_dir(std::string("hf_src_") + ffn + (tied ? "_tied" : ""));
    const std::string ckpt = make_checkpoint(model_config(ffn, tied), root);
    const fs::path out = root.parent_path() / (root.filename().string() + "_hf");
    auto [rc, msg] = test_e2e::run_cli("export-hf ckpt=" + ckpt + " out=" + out.string());
    ASSERT_EQ(rc, 0) << msg;
    const json cfg = read_json(out / "config.json");
    EXPECT_EQ(cfg["model_type"], std::string(ffn) == "stem" ? "lingua_stem_llama" : "llama");
    EXPECT_EQ(fs::exists(out / "modeling_lingua_stem.py"), std::string(ffn) == "stem");
    EXPECT_EQ(SafetensorsFile::open((out / "model.safetensors").string()).has("lm_head.weight"), !tied);
    expect_close(HfReference(out).logits(kIds), lingua_logits(ckpt, kIds), 2e-4, "HF-style forward vs lingua");
  }
}

// float32: export then import gives bitwise the same weights and model config; bfloat16 rounds.
TEST(HfExport, RoundTripIsBitwise) {
  for (const char* ffn : {"swiglu", "stem"}) {
    SCOPED_TRACE(ffn);
    const TrainConfig c = model_config(ffn, false);
    const fs::path root = test_e2e::temp_dir(std::string("hf_rt_") + ffn);
    const std::string ckpt = make_checkpoint(c, root);
    const fs::path hf = root / "hf", back = root / "back";
    for (const std::string dtype : {"float32", "bfloat16"}) {
      auto [rc, msg] = test_e2e::run_cli("export-hf ckpt=" + ckpt + " out=" + (hf / dtype).string() + " dtype=" + dtype);
      ASSERT_EQ(rc, 0) << msg;
      std::tie(rc, msg) = test_e2e::run_cli("import-hf hf=" + (hf / dtype).string() + " out=" + (back / dtype).string());
      ASSERT_EQ(rc, 0) << msg;
      EXPECT_NE(msg.find("checkpoint.init_ckpt_path="), std::string::npos) << msg;
      LoadedModel a = load_model(ckpt), b = load_model((back / dtype).string());
      EXPECT_EQ(b.config.data.tokenizer.name, "bytes");
      EXPECT_EQ(b.config.model.ffn, c.model.ffn);
      EXPECT_EQ(b.config.model.stem_layers, c.model.stem_layers);
      const ModelDims &da = a.model->dims(), &db = b.model->dims();
      EXPECT_EQ(std::tie(da.dim, da.n_layers, da.n_heads, da.n_kv_heads, da.head_dim, da.hidden, da.vocab, da.max_seqlen),
                std::tie(db.dim, db.n_layers, db.n_heads, db.n_kv_heads, db.head_dim, db.hidden, db.vocab, db.max_seqlen));
      EXPECT_EQ(da.norm_eps, db.norm_eps);
      EXPECT_EQ(da.rope_theta, db.rope_theta);
      const ParamStore &pa = a.model->params(), &pb = b.model->params();
      ASSERT_EQ(pa.ids().size(), pb.ids().size());
      for (int id : pa.ids()) {
        const std::string& name = pa.info(id).name;
        std::vector<float> want = pa.host_param(id);
        if (dtype == "bfloat16")
          for (float& x : want) x = round_to_bf16(x);
        EXPECT_EQ(pb.host_param(pb.index(name)), want) << name;
      }
    }
  }
}

// The tokenizer.json written for the bytes and tiktoken tokenizers encodes as the original.
TEST(HfExport, TokenizerJsonGivesTheOriginalIds) {
  using namespace tokenizer_testing;
  std::string text = hard_text();
  for (const std::string marker : {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_7|>"})
    for (size_t at; (at = text.find(marker)) != std::string::npos;) text.erase(at, marker.size());
  text += moby_dick().substr(0, 200000);
  const fs::path input = temp_file("hf_export_text.txt", text);
  const std::string cl100k = kNpm + "/tiktoken/encoders/cl100k_base.json";
  for (const std::string name : {"bytes", "tiktoken"}) {
    SCOPED_TRACE(name);
    TokenizerConfig tc{name, name == "tiktoken" ? cl100k : ""};
    if (name == "tiktoken" && (!kPcre2 || !fs::exists(cl100k))) {
      std::printf("(tiktoken skipped: no PCRE2 or no npm tiktoken data)\n");
      continue;
    }
    const std::unique_ptr<Tokenizer> original = make_tokenizer(tc);
    const fs::path dir = test_e2e::temp_dir("hf_tok_" + name);
    write_hf_tokenizer_files(tc, *original, true, 2048, dir.string());
    const json cfg = read_json(dir / "tokenizer_config.json");
    EXPECT_EQ(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
    if (!kPcre2) continue;  // (lingua's hf tokenizer needs PCRE2)
    HfTokenizer exported((dir / "tokenizer.json").string());
    EXPECT_EQ(exported.bos_id(), original->bos_id());
    EXPECT_EQ(exported.eos_id(), original->eos_id());
    EXPECT_EQ(exported.n_words(), original->n_words());
    const std::vector<int32_t> want = original->encode(text, true, true);
    const std::string diff = first_difference(*original, exported.encode(text, true, true), want);
    if (!diff.empty()) ADD_FAILURE() << diff;
    if (have_node() && fs::exists(kNpm + "/@lenml/tokenizers/package.json")) {
      const std::vector<int32_t> js =
          command_ids("node " + std::string(LINGUA_SOURCE_DIR) + "/tests/hf_tokenizer_reference.cjs " + kNpm + " " +
                      (dir / "tokenizer.json").string() + " " + (dir / "tokenizer_config.json").string() + " " +
                      input.string());
      const std::vector<int32_t> plain(want.begin() + 1, want.end() - 1);
      const std::string jdiff = first_difference(*original, js, plain);
      if (!jdiff.empty()) ADD_FAILURE() << "transformers.js: " << jdiff;
    }
  }
}

TEST(HfExportCli, ReferenceLogitsErrorsAndTheOriginalUntouched) {
  auto [rc, msg] = test_e2e::run_cli("export-hf --help");
  EXPECT_EQ(rc, 0);
  for (auto k : {"ckpt", "out", "dtype", "reference_text", "tokenizer_path"})
    EXPECT_NE(msg.find(k), std::string::npos) << k;
  const fs::path root = test_e2e::temp_dir("hf_cli");
  const std::string ckpt = make_checkpoint(model_config("lowrank", false), root / "src");
  const auto original = test_e2e::snapshot(root / "src");
  const fs::path out = root / "hf";
  std::tie(rc, msg) = test_e2e::run_cli("export-hf ckpt=" + (root / "src").string() + " out=" + out.string() +
                                        " reference_text='Call me Ishmael.'");
  ASSERT_EQ(rc, 0) << msg;
  EXPECT_NE(msg.find("structured FFNs merged to dense"), std::string::npos) << msg;
  EXPECT_EQ(test_e2e::snapshot(root / "src"), original);
  EXPECT_FALSE(fs::exists(root / "hf.tmp"));
  const json rec = read_json(out / "lingua_export.json");
  EXPECT_EQ(rec["merged_layers"], json::array({1, 2}));
  EXPECT_EQ(rec["source_ffn"], "lowrank");
  for (auto f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  EXPECT_EQ(read_json(out / "generation_config.json")["bos_token_id"], BytesTokenizer::kBos);

  // lingua_reference.safetensors: the text's ids (BOS first) and the factored model's logits.
  const SafetensorsFile ref = SafetensorsFile::open((out / "lingua_reference.safetensors").string());
  const std::string text = "Call me Ishmael.";
  std::vector<int32_t> ids((size_t)ref.info("input_ids").numel());
  ref.read_raw("input_ids", ids.data());
  ASSERT_EQ(ids.size(), text.size() + 1);
  EXPECT_EQ(ids[0], BytesTokenizer::kBos);
  std::vector<float> logits((size_t)ref.info("logits").numel());
  ref.read_raw("logits", logits.data());
  EXPECT_EQ(logits, lingua_logits(ckpt, ids));
  expect_close(HfReference(out).logits(ids), logits, 2e-4, "merged export vs factored logits");

  // Errors: an existing out; an import into an existing checkpoint; a config lingua cannot build.
  std::tie(rc, msg) = test_e2e::run_cli("export-hf ckpt=" + ckpt + " out=" + out.string());
  EXPECT_NE(rc, 0);
  EXPECT_NE(msg.find("already exists"), std::string::npos) << msg;
  std::tie(rc, msg) = test_e2e::run_cli("export-hf ckpt=" + ckpt + " out=" + (root / "x").string() + " dtype=f16");
  EXPECT_NE(rc, 0);
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;
  std::tie(rc, msg) = test_e2e::run_cli("import-hf hf=" + out.string() + " out=" + (root / "imported").string());
  ASSERT_EQ(rc, 0) << msg;
  std::tie(rc, msg) = test_e2e::run_cli("import-hf hf=" + out.string() + " out=" + (root / "imported").string());
  EXPECT_NE(rc, 0);
  EXPECT_NE(msg.find("already exists"), std::string::npos) << msg;
  json cfg = read_json(out / "config.json");
  cfg["rope_scaling"] = {{"rope_type", "llama3"}};
  std::ofstream(out / "config.json") << cfg.dump();
  std::tie(rc, msg) = test_e2e::run_cli("import-hf hf=" + out.string() + " out=" + (root / "imported2").string());
  EXPECT_NE(rc, 0);
  EXPECT_NE(msg.find("rope_scaling"), std::string::npos) << msg;
  cfg.erase("rope_scaling");
  std::ofstream(out / "config.json") << cfg.dump();
  {
    // A tensor missing from the weights is named.
    const SafetensorsFile f = SafetensorsFile::open((out / "model.safetensors").string());
    std::vector<std::vector<float>> keep;
    std::vector<NamedTensor> ts;
    for (const std::string& n : f.names()) {
      if (n == "model.norm.weight") continue;
      keep.emplace_back((size_t)f.info(n).numel());
      f.read_raw(n, keep.back().data());
      Tensor t(keep.back().data(), {f.info(n).numel()});
      t.ndim = (int)f.info(n).shape.size();
      for (int d = 0; d < t.ndim; ++d) t.shape[d] = f.info(n).shape[(size_t)d];
      ts.push_back({n, t});
    }
    write_safetensors((out / "model.safetensors").string(), ts);
  }
  std::tie(rc, msg) = test_e2e::run_cli("import-hf hf=" + out.string() + " out=" + (root / "imported3").string());
  EXPECT_NE(rc, 0);
  EXPECT_NE(msg.find("no tensor 'model.norm.weight'"), std::string::npos) << msg;
}

// An imported directory is a checkpoint to continue training from: a run initialised from it is
// bitwise the run initialised from the original checkpoint (same weights, same data and config).
TEST(HfImport, TrainingContinuesFromTheImportedCheckpoint) {
  const fs::path root = test_e2e::temp_dir("hf_continue");
  TrainConfig mc = model_config("swiglu", false);
  const std::string ckpt = make_checkpoint(mc, root / "src");
  auto [rc, msg] = test_e2e::run_cli("export-hf ckpt=" + ckpt + " out=" + (root / "hf").string());
  ASSERT_EQ(rc, 0) << msg;
  std::tie(rc, msg) = test_e2e::run_cli("import-hf hf=" + (root / "hf").string() + " out=" + (root / "imported").string());
  ASSERT_EQ(rc, 0) << msg;
  const std::string imported = (root / "imported" / checkpoint_dir_name(0)).string();
  EXPECT_NE(msg.find("checkpoint.init_ckpt_path=" + imported), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.n_kv_heads=2"), std::string::npos) << msg;
  const fs::path data = test_e2e::make_corpus("hf_continue");
  std::vector<std::vector<double>> losses;
  for (const std::string& init : {ckpt, imported}) {
    TrainConfig c = test_e2e::tiny_config(data, root / ("run_" + std::to_string(losses.size())));
    c.model = mc.model;
    c.data.seq_len = 24;
    c.steps = 4;
    c.checkpoint.init_ckpt_path = init;
    const TrainResult r = train(c, {nullptr, true});
    ASSERT_EQ(r.losses.size(), 4u);
    losses.push_back(r.losses);
  }
  EXPECT_EQ(losses[0], losses[1]);
}
