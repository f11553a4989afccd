// Corrupt checkpoints: the per-tensor checksums of the safetensors files (a flipped data byte is an
// error naming the tensor and the file), files without checksums, and resuming from the newest
// training checkpoint that loads (load_latest_training_checkpoint), the corrupt ones set aside.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_checkpoint.h"

namespace fs = std::filesystem;
using namespace lingua;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("lingua_corrupt_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// CRC-32 (reflected, polynomial 0xEDB88320) bit by bit: a reference independent of zlib.
uint32_t reference_crc32(const void* data, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= static_cast<const uint8_t*>(data)[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// The header of a safetensors file, as JSON.
nlohmann::json header_of(const fs::path& path) {
  const std::string bytes = slurp(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<uint8_t>(bytes[i])) << (8 * i);
  return nlohmann::json::parse(bytes.substr(8, n));
}

// Flips one bit of byte `k` of tensor `name`'s data in the file (k < 0: its last byte).
void flip_data_byte(const fs::path& path, const std::string& name, int64_t k = 0) {
  std::string bytes = slurp(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<uint8_t>(bytes[i])) << (8 * i);
  const TensorInfo& info = SafetensorsFile::open(path.string()).info(name);
  ASSERT_GT(info.end, info.begin) << name;
  const uint64_t at = 8 + n + (k < 0 ? info.end - 1 : info.begin + static_cast<uint64_t>(k));
  bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
  spit(path, bytes);
}

template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected lingua::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& s : needles) EXPECT_NE(msg.find(s), std::string::npos) << "'" << s << "' not in: " << msg;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// checksums

TEST(SafetensorsChecksum, WrittenPerTensorAndHiddenFromMetadata) {
  const fs::path dir = fresh_dir("written");
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, -0.0f};
  std::vector<int32_t> ids = {7, -8, 9};
  std::vector<uint16_t> h = {0x3f80, 0xbf80, 0x1234};
  const std::string path = (dir / "w.safetensors").string();
  write_safetensors(path,
                    {{"layers.0.attention.wq.weight", Tensor(a.data(), {2, 3})},
                     {"ids", Tensor(ids.data(), {3}, DType::i32)},
                     {"h", Tensor(h.data(), {3}, DType::bf16)},
                     {"empty", Tensor(a.data(), {0})}},
                    {{"format", "lingua.cpp"}});
  // In the file: one "lingua.crc32.<name>" per tensor, 8 hex digits of the data's CRC-32.
  const nlohmann::json meta = header_of(path)["__metadata__"];
  EXPECT_EQ(meta["format"], "lingua.cpp");
  auto hex = [](uint32_t c) {
    char b[16];
    std::snprintf(b, sizeof b, "%08x", c);
    return std::string(b);
  };
  EXPECT_EQ(meta["lingua.crc32.layers.0.attention.wq.weight"], hex(reference_crc32(a.data(), 24)));
  EXPECT_EQ(meta["lingua.crc32.ids"], hex(reference_crc32(ids.data(), 12)));
  EXPECT_EQ(meta["lingua.crc32.h"], hex(reference_crc32(h.data(), 6)));
  EXPECT_EQ(meta["lingua.crc32.empty"], "00000000");
  EXPECT_EQ(meta.size(), 5u);
  // Read back: the checksums are the tensors', the metadata is the caller's.
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "lingua.cpp"}}));
  ASSERT_TRUE(f.info("ids").stored_crc32.has_value());
  EXPECT_EQ(*f.info("ids").stored_crc32, reference_crc32(ids.data(), 12));
  std::vector<float> back(6);
  f.read_into("layers.0.attention.wq.weight", Tensor(back.data(), {2, 3}));
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), 24));
  // A caller cannot write the checksum keys.
  expect_error([&] { write_safetensors(path, {}, {{"lingua.crc32.x", "00000000"}}); }, {"lingua.crc32.x", "reserved"});
}

TEST(SafetensorsChecksum, FlippedDataByteIsAnErrorNamingTensorAndFile) {
  const fs::path dir = fresh_dir("flipped");
  std::vector<float> a(40), b(12);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.01f * (float)i - 0.2f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 3.0f + (float)i;
  const fs::path path = dir / "consolidated.safetensors";
  const std::string name = "layers.3.attention.wq.weight";
  write_safetensors(path.string(), {{"tok_embeddings.weight", Tensor(b.data(), {3, 4})}, {name, Tensor(a.data(), {5, 8})}});
  for (int64_t k : {int64_t(0), int64_t(77), int64_t(-1)}) {
    SCOPED_TRACE(k);
    const fs::path bad = dir / ("flipped_" + std::to_string(k) + ".safetensors");
    fs::copy_file(path, bad, fs::copy_options::overwrite_existing);
    flip_data_byte(bad, name, k);
    SafetensorsFile f = SafetensorsFile::open(bad.string());  // the header is intact
    std::vector<float> out(40);
    expect_error([&] { f.read_into(name, Tensor(out.data(), {5, 8})); },
                 {"checksum mismatch", "tensor '" + name + "'", bad.string(), "stored crc32", "computed", "corrupt"});
    std::vector<float> other(12);  // the other tensor is intact
    f.read_into("tok_embeddings.weight", Tensor(other.data(), {3, 4}));
    EXPECT_EQ(other, b);
  }
}

TEST(SafetensorsChecksum, FilesWithoutChecksumsLoad) {
  // As safetensors.torch.save_file writes them: metadata, but no checksums.
  const fs::path dir = fresh_dir("foreign");
  float x[3] = {1.0f, 2.0f, -3.0f};
  std::string header = R"({"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const fs::path path = dir / "torch.safetensors";
  spit(path, le64(header.size()) + header + std::string(reinterpret_cast<char*>(x), 12));
  SafetensorsFile f = SafetensorsFile::open(path.string());
  EXPECT_FALSE(f.info("x").stored_crc32.has_value());
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  float y[3];
  f.read_into("x", Tensor(y, {3}));
  EXPECT_EQ(0, std::memcmp(x, y, 12));
}

TEST(SafetensorsChecksum, MalformedChecksumEntriesAreErrors) {
  const fs::path dir = fresh_dir("malformed");
  auto file_with_meta = [&](const std::string& name, const std::string& meta) {
    std::string header = R"({"__metadata__":)" + meta + R"(,"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    header.append((8 - header.size() % 8) % 8, ' ');
    spit(dir / name, le64(header.size()) + header + std::string(4, '\0'));
    return (dir / name).string();
  };
  const std::string not_hex = file_with_meta("not_hex.safetensors", R"({"lingua.crc32.x":"12345g78"})");
  expect_error([&] { SafetensorsFile::open(not_hex); }, {not_hex, "lingua.crc32.x", "12345g78", "hex"});
  const std::string too_short = file_with_meta("short.safetensors", R"({"lingua.crc32.x":"1234"})");
  expect_error([&] { SafetensorsFile::open(too_short); }, {too_short, "hex"});
  const std::string orphan = file_with_meta("orphan.safetensors", R"({"lingua.crc32.y":"00000000"})");
  expect_error([&] { SafetensorsFile::open(orphan); }, {orphan, "'y'"});
  // The right checksum of 4 zero bytes loads.
  char b[16];
  std::snprintf(b, sizeof b, "%08x", reference_crc32("\0\0\0\0", 4));
  const std::string good = file_with_meta("good.safetensors", std::string(R"({"lingua.crc32.x":")") + b + "\"}");
  float v = 1;
  SafetensorsFile::open(good).read_into("x", Tensor(&v, {1}));
  EXPECT_EQ(v, 0.0f);
}

// ---------------------------------------------------------------------------------------------
// resuming past corrupt training checkpoints

namespace {

TrainConfig small_config() {
  TrainConfig c;
  c.model.dim = 16;
  c.model.n_layers = 2;
  c.model.n_heads = 2;
  c.model.multiple_of = 8;
  c.model.vocab_size = 260;  // >= the bytes tokenizer's 258
  c.model.max_seqlen = 16;
  c.data.seq_len = 16;  // params.json is validated on load
  return c;
}

// What a training checkpoint of step s holds.
struct Snapshot {
  std::vector<float> weights;
  std::vector<std::vector<float>> m, v;  // per trainable parameter id
  int64_t optimizer_steps = 0;
};

Snapshot snapshot(const Transformer& model, const AdamW& opt) {
  Snapshot s{model.params().host_values(), {}, {}, opt.steps_taken()};
  for (int id : model.params().ids()) {
    s.m.push_back(opt.host_m(id));
    s.v.push_back(opt.host_v(id));
  }
  return s;
}

// Training checkpoints of steps 1, 2, 3 under <dir>/checkpoints, one optimizer step apart;
// returns what each holds.
std::vector<Snapshot> save_three(const fs::path& dir) {
  const TrainConfig cfg = small_config();
  Transformer m(cfg.model, resolve_dims(cfg.model, 258));
  Executor ex(m);
  AdamW opt(m.params(), cfg.optim);
  std::vector<int32_t> tok = {1, 5, 9, 200, 7, 3}, tgt = {5, 9, 200, 7, 3, 2};
  std::vector<Snapshot> out;
  for (int step = 1; step <= 3; ++step) {
    ex.zero_grads();
    ex.forward_backward(tok.data(), tgt.data(), 1, 6, 1.0f / 6);
    opt.step(1.0);
    save_training_checkpoint((dir / "checkpoints").string(), cfg, m, opt, {step, opt.steps_taken(), {{"at", step}}});
    out.push_back(snapshot(m, opt));
  }
  return out;
}

// Resumes into a model and optimizer of another seed (so nothing matches by accident).
struct Resumed {
  std::optional<ResumedCheckpoint> r;
  Snapshot got;
};
Resumed resume(const fs::path& dir, const std::function<void(const TrainState&)>& load_rest = {}) {
  TrainConfig cfg = small_config();
  cfg.model.seed = 99;
  Transformer m(cfg.model, resolve_dims(cfg.model, 258));
  AdamW opt(m.params(), cfg.optim);
  Resumed out;
  out.r = load_latest_training_checkpoint((dir / "checkpoints").string(), m, opt, load_rest);
  out.got = snapshot(m, opt);
  return out;
}

std::string step_dir(const fs::path& dir, int64_t step) { return (dir / "checkpoints" / checkpoint_dir_name(step)).string(); }

void expect_same(const Snapshot& a, const Snapshot& b) {
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(a.m, b.m);
  EXPECT_EQ(a.v, b.v);
  EXPECT_EQ(a.optimizer_steps, b.optimizer_steps);
}

}  // namespace

TEST(ResumeCheckpoint, CorruptNewestFallsBackToThePreviousOne) {
  const fs::path base = fresh_dir("three");
  const std::vector<Snapshot> saved = save_three(base);
  ASSERT_NE(saved[1].weights, saved[2].weights);
  ASSERT_NE(saved[1].optimizer_steps, saved[2].optimizer_steps);
  {  // intact: the newest
    Resumed r = resume(base);
    ASSERT_TRUE(r.r.has_value());
    EXPECT_EQ(r.r->path, step_dir(base, 3));
    EXPECT_EQ(r.r->state.step, 3);
    EXPECT_TRUE(r.r->skipped.empty());
    expect_same(r.got, saved[2]);
  }
  const std::string ts = CheckpointFiles::train_state(0);
  const std::vector<std::pair<std::string, std::function<void(const fs::path&)>>> corruptions = {
      // The weights load, then the last moment fails: the older checkpoint must overwrite them all.
      {"flipped byte of the last moment", [](const fs::path& d) {
         const fs::path f = d / CheckpointFiles::optimizer;
         flip_data_byte(f, SafetensorsFile::open(f.string()).names().back(), -1);
       }},
      {"flipped byte of a weight", [](const fs::path& d) { flip_data_byte(d / CheckpointFiles::weights, "output.weight", 5); }},
      {"truncated weights",
       [](const fs::path& d) { fs::resize_file(d / CheckpointFiles::weights, fs::file_size(d / CheckpointFiles::weights) - 100); }},
      {"garbage header", [](const fs::path& d) {
         std::string b = slurp(d / CheckpointFiles::optimizer);
         b.replace(8, 12, "not a header");
         spit(d / CheckpointFiles::optimizer, b);
       }},
      {"truncated train state", [ts](const fs::path& d) { fs::resize_file(d / ts, fs::file_size(d / ts) / 2); }},
      {"train state without its step", [ts](const fs::path& d) { spit(d / ts, R"({"optimizer_steps": 3, "data_loader": {}})"); }},
      {"train state of another step", [ts](const fs::path& d) {
         nlohmann::json j = nlohmann::json::parse(slurp(d / ts));
         j["step"] = 7;
         spit(d / ts, j.dump());
       }},
  };
  for (const auto& [what, corrupt] : corruptions) {
    SCOPED_TRACE(what);
    const fs::path dir = fresh_dir("corrupt");
    fs::copy(base, dir, fs::copy_options::recursive);
    corrupt(fs::path(step_dir(dir, 3)));
    Resumed r = resume(dir);
    ASSERT_TRUE(r.r.has_value());
    EXPECT_EQ(r.r->path, step_dir(dir, 2));
    EXPECT_EQ(r.r->state.step, 2);
    EXPECT_EQ(r.r->state.data_loader["at"], 2);
    expect_same(r.got, saved[1]);
    ASSERT_EQ(r.r->skipped.size(), 1u);
    EXPECT_EQ(r.r->skipped[0].path, step_dir(dir, 3));
    EXPECT_FALSE(r.r->skipped[0].reason.empty());
    // Set aside, not deleted: out of the listing, so later saves are the newest.
    EXPECT_EQ(r.r->skipped[0].moved_to, step_dir(dir, 3) + ".corrupt");
    EXPECT_TRUE(fs::exists(fs::path(r.r->skipped[0].moved_to) / CheckpointFiles::weights));
    EXPECT_FALSE(fs::exists(step_dir(dir, 3)));
    ASSERT_EQ(list_checkpoints((dir / "checkpoints").string()).size(), 2u);
    EXPECT_EQ(latest_checkpoint((dir / "checkpoints").string())->step, 2);
  }
}

TEST(ResumeCheckpoint, ReasonsNameTheProblem) {
  const fs::path base = fresh_dir("reasons_base");
  save_three(base);
  const fs::path dir = fresh_dir("reasons");
  fs::copy(base, dir, fs::copy_options::recursive);
  flip_data_byte(fs::path(step_dir(dir, 3)) / CheckpointFiles::weights, "layers.1.attention.wq.weight", 3);
  fs::resize_file(fs::path(step_dir(dir, 2)) / CheckpointFiles::optimizer, 100);
  Resumed r = resume(dir);
  ASSERT_TRUE(r.r.has_value());
  EXPECT_EQ(r.r->state.step, 1);
  ASSERT_EQ(r.r->skipped.size(), 2u);  // newest first
  const std::string& a = r.r->skipped[0].reason;
  EXPECT_NE(a.find("checksum mismatch"), std::string::npos) << a;
  EXPECT_NE(a.find("'layers.1.attention.wq.weight'"), std::string::npos) << a;
  EXPECT_NE(a.find(step_dir(dir, 3) + "/" + CheckpointFiles::weights), std::string::npos) << a;
  const std::string& b = r.r->skipped[1].reason;
  EXPECT_NE(b.find("truncated"), std::string::npos) << b;
  EXPECT_NE(b.find(step_dir(dir, 2) + "/" + CheckpointFiles::optimizer), std::string::npos) << b;
  EXPECT_EQ(r.r->skipped[1].moved_to, step_dir(dir, 2) + ".corrupt");
  EXPECT_EQ(list_checkpoints((dir / "checkpoints").string()).size(), 1u);
}

TEST(ResumeCheckpoint, CallersPartFailingFallsBackToo) {
  const fs::path dir = fresh_dir("load_rest");
  const std::vector<Snapshot> saved = save_three(dir);
  std::vector<int64_t> seen;
  Resumed r = resume(dir, [&](const TrainState& st) {
    seen.push_back(st.step);
    LINGUA_CHECK(st.step != 3, "data loader state: malformed");
  });
  ASSERT_TRUE(r.r.has_value());
  EXPECT_EQ(seen, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(r.r->state.step, 2);
  expect_same(r.got, saved[1]);  // the optimizer step count of step 3 was set, then overwritten
  ASSERT_EQ(r.r->skipped.size(), 1u);
  EXPECT_NE(r.r->skipped[0].reason.find("data loader state"), std::string::npos);
}

TEST(ResumeCheckpoint, NoneLoadsIsAnErrorNamingEachAndMovesNothing) {
  const fs::path dir = fresh_dir("all_corrupt");
  save_three(dir);
  for (int s = 1; s <= 3; ++s) fs::resize_file(fs::path(step_dir(dir, s)) / CheckpointFiles::weights, 50);
  expect_error([&] { resume(dir); },
               {"none of the 3 checkpoints", step_dir(dir, 1) + ":", step_dir(dir, 2) + ":", step_dir(dir, 3) + ":",
                "truncated", "not starting from scratch"});
  EXPECT_EQ(list_checkpoints((dir / "checkpoints").string()).size(), 3u);
  // A config that matches none fails the same way (and sets nothing aside).
  const fs::path other = fresh_dir("mismatch");
  save_three(other);
  TrainConfig cfg = small_config();
  cfg.model.dim = 32;
  Transformer m(cfg.model, resolve_dims(cfg.model, 258));
  AdamW opt(m.params(), cfg.optim);
  expect_error([&] { load_latest_training_checkpoint((other / "checkpoints").string(), m, opt); },
               {"none of the 3", "does the config match"});
  EXPECT_EQ(list_checkpoints((other / "checkpoints").string()).size(), 3u);
  // No checkpoint at all: nothing to resume.
  EXPECT_FALSE(resume(fresh_dir("empty")).r.has_value());
}

TEST(ResumeCheckpoint, SetAsideNamesAreFree) {
  const fs::path dir = fresh_dir("aside");
  fs::create_directories(dir / "0000000005");
  fs::create_directories(dir / "0000000005.corrupt");
  EXPECT_EQ(set_aside_corrupt_checkpoint((dir / "0000000005").string()), (dir / "0000000005.corrupt.1").string());
  fs::create_directories(dir / "0000000005");
  EXPECT_EQ(set_aside_corrupt_checkpoint((dir / "0000000005/").string()), (dir / "0000000005.corrupt.2").string());
  EXPECT_FALSE(fs::exists(dir / "0000000005"));
  expect_error([&] { set_aside_corrupt_checkpoint((dir / "missing").string()); }, {"missing"});
}

TEST(ResumeCheckpoint, LoadModelOfACorruptCheckpointNamesFileAndTensor) {
  const fs::path dir = fresh_dir("load_model");
  save_three(dir);
  const fs::path weights = fs::path(step_dir(dir, 3)) / CheckpointFiles::weights;
  flip_data_byte(weights, "layers.0.feed_forward.w2.weight", 11);
  expect_error([&] { load_model(dir.string()); },
               {"checksum mismatch", "'layers.0.feed_forward.w2.weight'", weights.string(), "corrupt"});
  // A truncated params.json (no checksum: JSON cannot be cut to a valid object) names the file.
  const fs::path params = fs::path(step_dir(dir, 2)) / CheckpointFiles::params;
  fs::resize_file(params, fs::file_size(params) * 2 / 3);
  expect_error([&] { load_model(step_dir(dir, 2)); }, {params.string(), "not valid JSON"});
}
