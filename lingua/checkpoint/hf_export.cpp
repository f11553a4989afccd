#include "lingua/checkpoint/hf_export.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lingua/checkpoint/atomic_file.h"
#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/hf_llama.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/core/bf16.h"
#include "lingua/core/error.h"
#include "lingua/data/hf_tokenizer.h"
#include "lingua/data/tiktoken.h"
#include "lingua/model/dims.h"
#include "lingua/model/ffn/ffn.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

using json = nlohmann::json;

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  LINGUA_CHECK(out.good(), "cannot write '", path.string(), "'");
}

json added_token(int id, const std::string& content) {
  return {{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},   {"normalized", false}, {"special", true}};
}

std::string byte_level(const std::string& bytes) {
  std::string s;
  for (unsigned char c : bytes) s += gpt2_byte_char(c);
  return s;
}

// TemplateProcessing that puts `bos` before each sequence (or nothing when bos is empty).
json bos_post_processor(const std::string& bos, int bos_id) {
  if (bos.empty()) return nullptr;
  const json tok = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  return {{"type", "TemplateProcessing"},
          {"single", {tok, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"pair", {tok, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, tok, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
}

json bpe_model(json vocab, json merges, bool ignore_merges) {
  return {{"type", "BPE"},           {"dropout", nullptr},        {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
          {"byte_fallback", false},  {"ignore_merges", ignore_merges}, {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

json byte_level_decoder() {
  return {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
}

// The merges that rebuild every token of a tiktoken vocabulary: for each token (in rank order),
// byte-pair merging of its bytes with the ranks below its own ends in two parts, the pair merged
// last. A token that does not end in two parts (unreachable by merging) gets no merge: with
// ignore_merges it is still found whole.
json tiktoken_merges(const TiktokenTokenizer& tt) {
  json merges = json::array();
  std::vector<std::string> parts;
  for (int id = 0; id < tt.n_ranks(); ++id) {
    const std::string& bytes = tt.token_bytes(id);
    if (bytes.size() < 2) continue;
    parts.clear();
    for (char c : bytes) parts.emplace_back(1, c);
    while (parts.size() > 2) {
      int best = -1, best_rank = id;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        const int r = tt.rank_of(parts[i] + parts[i + 1]);
        if (r >= 0 && r < best_rank) best_rank = r, best = (int)i;
      }
      if (best < 0) break;
      parts[(size_t)best] += parts[(size_t)best + 1];
      parts.erase(parts.begin() + best + 1);
    }
    if (parts.size() == 2) merges.push_back(byte_level(parts[0]) + " " + byte_level(parts[1]));
  }
  return merges;
}

json tokenizer_config(const char* cls, const std::string& bos, const std::string& eos, bool add_bos, int max_len) {
  json j = {{"tokenizer_class", cls}, {"model_max_length", max_len}, {"add_bos_token", add_bos},
            {"add_eos_token", false}, {"clean_up_tokenization_spaces", false}};
  j["bos_token"] = bos.empty() ? json(nullptr) : json(bos);
  j["eos_token"] = eos.empty() ? json(nullptr) : json(eos);
  return j;
}

// The content of added token `id` in a tokenizer.json, "" when it has none.
std::string added_content(const json& tj, int id) {
  if (id < 0 || !tj.contains("added_tokens")) return "";
  for (const json& t : tj["added_tokens"])
    if (t.value("id", -1) == id) return t.value("content", "");
  return "";
}

bool is_bytes_export(const json& tj) {
  const json& m = tj.value("model", json::object());
  return m.value("type", "") == "BPE" && m.contains("vocab") && m["vocab"].size() == 256 && m.contains("merges") &&
         m["merges"].empty() && added_content(tj, BytesTokenizer::kBos) == "<s>" &&
         added_content(tj, BytesTokenizer::kEos) == "</s>" && tj["added_tokens"].size() == 2;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000 | mant << 13;  // inf / nan
  } else if (exp != 0) {
    bits = sign | (exp + 112) << 23 | mant << 13;
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    uint32_t m = mant;
    do { m <<= 1, ++e; } while (!(m & 0x400));
    bits = sign | (uint32_t)(112 - e) << 23 | (m & 0x3FF) << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

std::vector<std::string> write_hf_tokenizer_files(const TokenizerConfig& cfg, const Tokenizer& tok, bool add_bos,
                                                  int max_len, const std::string& dir_s) {
  const fs::path dir(dir_s);
  std::vector<std::string> files;
  auto put = [&](const std::string& name, const std::string& content) {
    write_file(dir / name, content);
    files.push_back(name);
  };
  if (cfg.name == "hf") {
    const std::string text = read_text_file(cfg.path);
    const json tj = json::parse(text, nullptr, false);
    LINGUA_CHECK(!tj.is_discarded(), cfg.path, ": not JSON (data.tokenizer.path)");
    put("tokenizer.json", text);
    put("tokenizer_config.json", tokenizer_config("PreTrainedTokenizerFast", added_content(tj, tok.bos_id()),
                                                  added_content(tj, tok.eos_id()), add_bos, max_len)
                                     .dump(2));
  } else if (cfg.name == "sp") {
    put("tokenizer.model", read_text_file(cfg.path));
    json c = tokenizer_config("LlamaTokenizer", "<s>", "</s>", add_bos, max_len);
    c["unk_token"] = "<unk>";
    c["legacy"] = true;
    put("tokenizer_config.json", c.dump(2));
  } else if (cfg.name == "tiktoken" || cfg.name == "bytes") {
    json vocab = json::object(), merges = json::array(), added = json::array(), pre;
    std::string bos, eos;
    if (cfg.name == "tiktoken") {
      const auto* tt = dynamic_cast<const TiktokenTokenizer*>(&tok);
      LINGUA_CHECK(tt, "data.tokenizer.name is tiktoken but the tokenizer is not");
      for (int id = 0; id < tt->n_ranks(); ++id) vocab[byte_level(tt->token_bytes(id))] = id;
      merges = tiktoken_merges(*tt);
      for (size_t k = 0; k < tt->special_names().size(); ++k)
        added.push_back(added_token(tt->n_ranks() + (int)k, tt->special_names()[k]));
      bos = tt->special_names()[0];
      eos = tt->special_names()[1];
      pre = {{"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"Regex", tt->pattern()}}}, {"behavior", "Isolated"}, {"invert", false}},
               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
    } else {
      for (int b = 0; b < 256; ++b) vocab[gpt2_byte_char(b)] = b;
      bos = "<s>";
      eos = "</s>";
      added.push_back(added_token(BytesTokenizer::kBos, bos));
      added.push_back(added_token(BytesTokenizer::kEos, eos));
      // (The GPT-2 regex changes nothing without merges; it keeps the words short for the BPE.)
      pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    }
    const json tj = {{"version", "1.0"},
                     {"truncation", nullptr},
                     {"padding", nullptr},
                     {"added_tokens", added},
                     {"normalizer", nullptr},
                     {"pre_tokenizer", pre},
                     {"post_processor", add_bos ? bos_post_processor(bos, tok.bos_id()) : json(nullptr)},
                     {"decoder", byte_level_decoder()},
                     {"model", bpe_model(std::move(vocab), std::move(merges), cfg.name == "tiktoken")}};
    put("tokenizer.json", tj.dump());
    put("tokenizer_config.json", tokenizer_config("PreTrainedTokenizerFast", bos, eos, add_bos, max_len).dump(2));
  } else {
    fail("data.tokenizer.name '", cfg.name, "' has no Hugging Face form");
  }
  return files;
}

void write_hf_llama(const Transformer& model, const TrainConfig& cfg, const Tokenizer& tok, const std::string& dir,
                    const std::string& dtype, const std::function<void(const std::string& dir)>& write_extra) {
  LINGUA_CHECK(dtype == "float32" || dtype == "bfloat16", "config key 'dtype': '", dtype,
               "' is not float32 or bfloat16");
  LINGUA_CHECK(!fs::exists(dir), "config key 'out': ", dir, " already exists; give a new directory");
  if (const ModuleTokens* m = model.module_tokens(); m && !m->held().empty()) {
    std::string names;
    for (const std::string& n : m->held()) names += (names.empty() ? "" : ", ") + n;
    fail("the model holds module tokens (", names, "), which a Hugging Face Llama cannot run; to export the base "
         "model, write a checkpoint without them first (lingua modules remove ckpt=... name=X out=...)");
  }
  const fs::path tmp = dir + ".tmp";
  fs::remove_all(tmp);  // a crashed earlier export
  fs::create_directories(tmp);

  const ModelDims& d = model.dims();
  const ParamStore& store = model.params();
  std::vector<std::vector<float>> f32;
  std::vector<std::vector<uint16_t>> b16;
  std::vector<NamedTensor> tensors;
  for (int id : store.ids()) {
    const ParamInfo& p = store.info(id);
    f32.push_back(store.host_param(id));
    std::vector<float>& v = f32.back();
    if (const int64_t heads = rope_row_heads(p.name, d))
      permute_rope_rows(v.data(), heads, d.head_dim, p.shape.back(), true);
    Tensor t = param_host_tensor(v.data(), p);
    if (dtype == "bfloat16") {
      b16.push_back(to_bf16(v));
      t.data = b16.back().data();
      t.dtype = DType::bf16;
      v = {};
    }
    tensors.push_back({hf_llama_name(p.name), t});
  }
  write_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
  tensors.clear();
  f32.clear();
  b16.clear();

  json config = hf_llama_config(cfg.model, d, tok.bos_id(), tok.eos_id(), dtype);
  write_file(tmp / "config.json", config.dump(2) + "\n");
  json gen = {{"bos_token_id", config["bos_token_id"]}, {"eos_token_id", config["eos_token_id"]}};
  write_file(tmp / "generation_config.json", gen.dump(2) + "\n");
  if (const FfnHfForm* form = ffn_hf_form(cfg.model.ffn))
    for (const auto& [name, content] : form->files) write_file(tmp / name, content);
  write_hf_tokenizer_files(cfg.data.tokenizer, tok, cfg.data.add_bos, d.max_seqlen, tmp.string());
  if (write_extra) write_extra(tmp.string());
  for (const auto& f : fs::directory_iterator(tmp)) fsync_file(f.path().string());
  fsync_dir(tmp.string());
  fs::rename(tmp, dir);
  fsync_dir(fs::absolute(fs::path(dir)).parent_path().string());
}

HfImported read_hf_llama(const std::string& dir_s, const std::string& tokenizer_dir) {
  const fs::path dir(dir_s);
  LINGUA_CHECK(fs::is_directory(dir), "'", dir_s, "' is not a directory (a Hugging Face model directory)");
  const std::string config_path = (dir / "config.json").string();
  const json cj = json::parse(read_text_file(config_path), nullptr, false);
  LINGUA_CHECK(!cj.is_discarded(), config_path, ": not JSON");
  HfImported out;
  TrainConfig& cfg = out.config;
  cfg.model = model_config_from_hf(cj, config_path);
  if (cfg.model.max_seqlen) cfg.data.seq_len = std::min(cfg.data.seq_len, *cfg.model.max_seqlen);

  // Tokenizer.
  if (fs::exists(dir / "tokenizer.json")) {
    const std::string text = read_text_file((dir / "tokenizer.json").string());
    const json tj = json::parse(text, nullptr, false);
    LINGUA_CHECK(!tj.is_discarded(), (dir / "tokenizer.json").string(), ": not JSON");
    if (is_bytes_export(tj)) {
      cfg.data.tokenizer.name = "bytes";
    } else {
      fs::create_directories(tokenizer_dir);
      const fs::path dst = fs::absolute(fs::path(tokenizer_dir) / "tokenizer.json");
      write_text_file_atomic(dst.string(), text);
      cfg.data.tokenizer = {"hf", dst.string()};
    }
  } else if (fs::exists(dir / "tokenizer.model")) {
    fs::create_directories(tokenizer_dir);
    const fs::path dst = fs::absolute(fs::path(tokenizer_dir) / "tokenizer.model");
    write_text_file_atomic(dst.string(), read_text_file((dir / "tokenizer.model").string()));
    cfg.data.tokenizer = {"sp", dst.string()};
  } else {
    out.notes.push_back(dir_s + " has no tokenizer.json or tokenizer.model: data.tokenizer is left as bytes; set "
                        "data.tokenizer.name and path before training");
  }
  const ModelDims dims = resolve_dims(cfg.model, cfg.model.vocab_size);
  out.model = std::make_unique<Transformer>(cfg.model, dims);
  ParamStore& store = out.model->params();

  // Weights: one file, or the shards of an index.
  std::vector<std::string> files;
  if (fs::exists(dir / "model.safetensors.index.json")) {
    const std::string index_path = (dir / "model.safetensors.index.json").string();
    const json ij = json::parse(read_text_file(index_path), nullptr, false);
    LINGUA_CHECK(!ij.is_discarded() && ij.contains("weight_map") && ij["weight_map"].is_object(), index_path,
                 ": not a safetensors index (no weight_map)");
    std::set<std::string> seen;
    for (const auto& [name, file] : ij["weight_map"].items())
      if (seen.insert(file.get<std::string>()).second) files.push_back((dir / file.get<std::string>()).string());
  } else {
    LINGUA_CHECK(fs::exists(dir / "model.safetensors"), dir_s, " has no model.safetensors (or its index); ",
                 "pytorch_model.bin files are not read: save the model with safe_serialization=True");
    files.push_back((dir / "model.safetensors").string());
  }
  std::vector<bool> loaded((size_t)store.size() + 1, false);
  std::vector<float> v;
  for (const std::string& path : files) {
    const SafetensorsFile f = SafetensorsFile::open(path);
    for (const std::string& hf : f.names()) {
      const std::string name = lingua_name_of_hf(hf, path);
      if (name.empty()) continue;
      if (name == "output.weight" && dims.weight_tying) continue;  // (some exports keep the tied copy)
      const int id = store.find(name);
      LINGUA_CHECK(id >= 0, path, ": tensor '", hf, "' (lingua '", name, "') has no place in the model of ",
                   config_path);
      const ParamInfo& p = store.info(id);
      const TensorInfo& t = f.info(hf);
      LINGUA_CHECK(t.shape == p.shape, path, ": tensor '", hf, "' has shape ", t.shape_str(), ", the model of ",
                   config_path, " expects ", shape_str(p.shape));
      v.resize((size_t)p.full_numel());
      if (t.st_dtype == "F32") {
        f.read_raw(hf, v.data());
      } else if (t.st_dtype == "BF16" || t.st_dtype == "F16") {
        std::vector<uint16_t> h(v.size());
        f.read_raw(hf, h.data());
        for (size_t i = 0; i < h.size(); ++i) v[i] = t.st_dtype == "BF16" ? bf16_to_float(h[i]) : half_to_float(h[i]);
      } else {
        fail(path, ": tensor '", hf, "' has dtype ", t.st_dtype, " (lingua reads F32, BF16 and F16)");
      }
      if (const int64_t heads = rope_row_heads(name, dims))
        permute_rope_rows(v.data(), heads, dims.head_dim, p.shape.back(), false);
      store.set_param(id, v.data());
      loaded[(size_t)id] = true;
    }
  }
  for (int id : store.ids())
    LINGUA_CHECK(loaded[(size_t)id], dir_s, ": the weights have no tensor '", hf_llama_name(store.info(id).name),
                 "' (lingua '", store.info(id).name, "')");
  return out;
}

}  // namespace lingua
