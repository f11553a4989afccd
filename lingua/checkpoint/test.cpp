// Tests for safetensors I/O and atomic checkpoint directories.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "lingua/checkpoint/checkpoint.h"
#include "lingua/checkpoint/model_io.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_state.h"

namespace fs = std::filesystem;
using namespace lingua;

namespace {

// A fresh directory per test, removed afterwards.
class TmpDir : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("lingua_ckpt_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A hand-made safetensors file: header text padded with spaces, then data.
void write_raw(const std::string& path, std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  spit(path, le64(header.size()) + header + data);
}

// Owns random bytes for a tensor of the given shape and dtype.
struct Buf {
  std::vector<uint8_t> bytes;
  Tensor t;
  Buf(std::initializer_list<int64_t> shape, DType dt, std::mt19937& rng) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    bytes.resize(static_cast<size_t>(n) * dtype_size(dt));
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    t = Tensor(bytes.data(), shape, dt);
  }
};

// Runs f, expects a lingua::Error whose message contains every needle.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected lingua::Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// safetensors

class Safetensors : public TmpDir {};

TEST_F(Safetensors, RoundTripBitwise) {
  std::mt19937 rng(1234);
  std::vector<Buf> bufs;
  bufs.reserve(8);
  bufs.emplace_back(std::initializer_list<int64_t>{3, 5, 7}, DType::f32, rng);
  bufs.emplace_back(std::initializer_list<int64_t>{1, 13}, DType::bf16, rng);
  bufs.emplace_back(std::initializer_list<int64_t>{11}, DType::i32, rng);
  bufs.emplace_back(std::initializer_list<int64_t>{17, 3}, DType::bf16, rng);  // odd byte count: 102
  bufs.emplace_back(std::initializer_list<int64_t>{2, 3, 1, 5, 2}, DType::i32, rng);
  bufs.emplace_back(std::initializer_list<int64_t>{}, DType::f32, rng);       // scalar
  bufs.emplace_back(std::initializer_list<int64_t>{0, 4}, DType::f32, rng);   // empty
  bufs.emplace_back(std::initializer_list<int64_t>{9, 1, 1}, DType::f32, rng);
  const std::vector<std::string> names = {"layers.0.attention.wq.weight", "z_bf16", "a_ids", "odd.bf16",
                                          "five_d", "scalar", "empty", "ünïcode.name"};
  std::vector<NamedTensor> ts;
  for (size_t i = 0; i < bufs.size(); ++i) ts.push_back({names[i], bufs[i].t});
  const std::string path = p("model.safetensors");
  write_safetensors(path, ts);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), names);  // header order = the order given
  EXPECT_TRUE(f.metadata().empty());
  for (size_t i = 0; i < bufs.size(); ++i) {
    const Tensor& src = bufs[i].t;
    ASSERT_TRUE(f.has(names[i]));
    const TensorInfo& info = f.info(names[i]);
    ASSERT_TRUE(info.dtype.has_value());
    EXPECT_EQ(*info.dtype, src.dtype);
    EXPECT_EQ(info.st_dtype, safetensors_dtype_name(src.dtype));
    ASSERT_EQ(static_cast<int>(info.shape.size()), src.ndim);
    for (int d = 0; d < src.ndim; ++d) EXPECT_EQ(info.shape[d], src.shape[d]);

    std::vector<uint8_t> out(bufs[i].bytes.size() + 1, 0xAB);  // +1 guards against overruns
    Tensor dst = src;
    dst.data = out.data();
    f.read_into(names[i], dst);
    EXPECT_EQ(0, std::memcmp(out.data(), bufs[i].bytes.data(), bufs[i].bytes.size())) << names[i];
    EXPECT_EQ(out.back(), 0xAB);
  }
  EXPECT_FALSE(f.has("nope"));
}

TEST_F(Safetensors, MetadataRoundTripAndOverwrite) {
  std::mt19937 rng(7);
  Buf a({4, 4}, DType::f32, rng);
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "1200"}, {"note", "ünï \"quoted\"\n"},
                                             {"empty", ""}};
  const std::string path = p("m.safetensors");
  write_safetensors(path, {{"a", a.t}}, {{"old", "x"}});
  write_safetensors(path, {{"a", a.t}}, meta);  // overwrites
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.names(), std::vector<std::string>{"a"});

  write_safetensors(p("none.safetensors"), {}, meta);  // no tensors, only metadata
  SafetensorsFile g = SafetensorsFile::open(p("none.safetensors"));
  EXPECT_TRUE(g.names().empty());
  EXPECT_EQ(g.metadata(), meta);
}

TEST_F(Safetensors, FileLayoutMatchesSpec) {
  std::mt19937 rng(99);
  Buf a({3, 5}, DType::f32, rng), b({7}, DType::bf16, rng), c({2, 3}, DType::i32, rng);
  const std::string path = p("layout.safetensors");
  write_safetensors(path, {{"w", a.t}, {"b", b.t}, {"ids", c.t}}, {{"k", "v"}});

  const std::string bytes = slurp(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<uint8_t>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  // Padding: only trailing spaces after the closing brace.
  size_t close = header.find_last_of('}');
  ASSERT_NE(close, std::string::npos);
  EXPECT_LT(header.size() - close - 1, 8u);
  for (size_t i = close + 1; i < header.size(); ++i) EXPECT_EQ(header[i], ' ');

  auto j = nlohmann::ordered_json::parse(header);
  ASSERT_TRUE(j.is_object());
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "w", "b", "ids"}));
  // The caller's metadata, then a checksum per tensor (in tensor order).
  std::vector<std::string> meta_keys;
  for (auto it = j["__metadata__"].begin(); it != j["__metadata__"].end(); ++it) meta_keys.push_back(it.key());
  EXPECT_EQ(meta_keys, (std::vector<std::string>{"k", "lingua.crc32.w", "lingua.crc32.b", "lingua.crc32.ids"}));
  EXPECT_EQ(j["__metadata__"]["k"], "v");

  const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>, const Buf*>> want = {
      {"w", "F32", {3, 5}, &a}, {"b", "BF16", {7}, &b}, {"ids", "I32", {2, 3}, &c}};
  uint64_t pos = 0;
  for (const auto& [name, dtype, shape, buf] : want) {
    const auto& e = j[name];
    EXPECT_EQ(e.size(), 3u) << name;  // exactly dtype, shape, data_offsets
    EXPECT_EQ(e["dtype"].get<std::string>(), dtype);
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), shape);
    auto off = e["data_offsets"].get<std::vector<uint64_t>>();
    ASSERT_EQ(off.size(), 2u);
    EXPECT_EQ(off[0], pos) << name << ": tensors must be contiguous from 0 in header order";
    EXPECT_EQ(off[1] - off[0], buf->bytes.size());
    EXPECT_EQ(0, std::memcmp(bytes.data() + 8 + n + off[0], buf->bytes.data(), buf->bytes.size())) << name;
    pos = off[1];
  }
  EXPECT_EQ(bytes.size(), 8 + n + pos);
}

TEST_F(Safetensors, ReadsHandWrittenFile) {
  // A file as another writer could produce it: data order differs from header order, extra dtypes.
  float x[2] = {1.5f, -2.0f};
  int32_t y[3] = {7, 8, 9};
  std::string data(reinterpret_cast<char*>(y), 12);
  data += std::string(reinterpret_cast<char*>(x), 8);
  data += std::string(4, '\x01');  // an F16 [2] tensor lingua cannot load but can list
  write_raw(p("h.safetensors"),
            R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},)"
            R"("h":{"dtype":"F16","shape":[2],"data_offsets":[20,24]},)"
            R"("y":{"dtype":"I32","shape":[3],"data_offsets":[0,12]}})",
            data);
  SafetensorsFile f = SafetensorsFile::open(p("h.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"x", "h", "y"}));
  float xr[2];
  int32_t yr[3];
  f.read_into("x", Tensor(xr, {2}));
  f.read_into("y", Tensor(yr, {3}));
  EXPECT_EQ(xr[1], -2.0f);
  EXPECT_EQ(yr[2], 9);
  EXPECT_EQ(f.info("h").st_dtype, "F16");
  EXPECT_FALSE(f.info("h").dtype.has_value());
  uint16_t hr[2];
  expect_error([&] { f.read_into("h", Tensor(hr, {2}, DType::bf16)); }, {"'h'", "F16", "h.safetensors"});
}

TEST_F(Safetensors, CorruptFilesNameTheFile) {
  std::mt19937 rng(5);
  Buf a({5, 3}, DType::f32, rng), b({4}, DType::i32, rng);
  const std::string good = p("good.safetensors");
  write_safetensors(good, {{"a", a.t}, {"b", b.t}}, {{"m", "1"}});
  const std::string bytes = slurp(good);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<uint8_t>(bytes[i])) << (8 * i);
  ASSERT_NO_THROW(SafetensorsFile::open(good));

  auto check = [&](const std::string& name, const std::string& content, std::initializer_list<std::string> more) {
    SCOPED_TRACE(name);
    const std::string path = p(name);
    spit(path, content);
    std::vector<std::string> needles = {path};
    needles.insert(needles.end(), more);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "expected lingua::Error for " << name;
    } catch (const Error& e) {
      std::string msg = e.what();
      for (const std::string& s : needles) EXPECT_NE(msg.find(s), std::string::npos) << "'" << s << "' not in: " << msg;
    }
  };
  auto with_header = [&](std::string header, const std::string& data) {
    header.append((8 - header.size() % 8) % 8, ' ');
    return le64(header.size()) + header + data;
  };

  check("truncated_data.safetensors", bytes.substr(0, bytes.size() - 1), {"truncated"});
  check("truncated_data_more.safetensors", bytes.substr(0, 8 + n + 10), {"truncated"});
  check("truncated_header.safetensors", bytes.substr(0, 8 + n / 2), {"truncated"});
  check("truncated_length.safetensors", bytes.substr(0, 5), {"truncated"});
  check("empty.safetensors", "", {"truncated"});
  check("huge_length.safetensors", le64(uint64_t(1) << 40) + std::string(64, ' '), {"header length"});
  check("garbage_header.safetensors", le64(16) + "{this is not js}" + std::string(8, '\0'), {"not valid JSON"});
  check("binary_garbage.safetensors", std::string("\x13\x37\xde\xad\xbe\xef\x00\x01", 8) + std::string(100, 'x'),
        {});
  check("not_object.safetensors", with_header("[1,2,3]", ""), {});
  check("offsets_beyond.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}})", std::string(16, '\0')),
        {"'a'", "beyond"});
  check("overlap.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                    std::string(16, '\0')),
        {"overlaps"});
  check("gap.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                    std::string(16, '\0')),
        {"gap"});
  check("trailing.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(12, '\0')),
        {"trailing"});
  check("inconsistent_shape.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[3,3],"data_offsets":[0,16]}})", std::string(16, '\0')),
        {"'a'", "[3, 3]", "36 bytes", "16"});
  check("end_before_begin.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, '\0')), {"'a'"});
  check("unknown_dtype.safetensors",
        with_header(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
        {"'a'", "Q4"});
  check("negative_dim.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')), {"'a'"});
  check("float_dim.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", std::string(8, '\0')), {"'a'"});
  check("missing_offsets.safetensors", with_header(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')),
        {"'a'", "data_offsets"});
  check("bad_offsets.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", std::string(8, '\0')),
        {"'a'", "data_offsets"});
  check("bad_metadata.safetensors",
        with_header(R"({"__metadata__":{"k":3},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                    std::string(8, '\0')),
        {"metadata"});
  check("duplicate.safetensors",
        with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    std::string(8, '\0')),
        {"'a'", "twice"});
  check("overflow.safetensors",
        with_header(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                    std::string(8, '\0')),
        {"'a'"});
  // Found by fuzz/fuzz_safetensors: 0 elements, but TensorInfo::numel() overflowed int64 on the way.
  check("overflow_zero_dim.safetensors",
        with_header(R"({"a":{"dtype":"BOOL","shape":[4611686018427387904,3,0],"data_offsets":[0,0]}})", ""),
        {"'a'", "too large"});
  expect_error([&] { SafetensorsFile::open(p("missing.safetensors")); }, {p("missing.safetensors"), "cannot open"});
}

TEST_F(Safetensors, TruncatedAfterOpenIsAnError) {
  std::mt19937 rng(3);
  Buf a({64}, DType::f32, rng);
  const std::string path = p("t.safetensors");
  write_safetensors(path, {{"a", a.t}});
  SafetensorsFile f = SafetensorsFile::open(path);
  fs::resize_file(path, fs::file_size(path) - 4);
  std::vector<float> out(64);
  expect_error([&] { f.read_into("a", Tensor(out.data(), {64})); }, {path, "'a'"});
}

TEST_F(Safetensors, ReadIntoMismatchNamesTensorFileAndShapes) {
  std::mt19937 rng(11);
  Buf a({4, 6}, DType::f32, rng);
  const std::string path = p("w.safetensors");
  write_safetensors(path, {{"layers.3.feed_forward.w1.weight", a.t}});
  SafetensorsFile f = SafetensorsFile::open(path);
  std::vector<float> buf(24);
  std::vector<uint16_t> hbuf(24);
  const std::string name = "layers.3.feed_forward.w1.weight";
  expect_error([&] { f.read_into(name, Tensor(buf.data(), {6, 4})); }, {name, path, "[4, 6]", "[6, 4]", "shape"});
  expect_error([&] { f.read_into(name, Tensor(buf.data(), {24})); }, {name, path, "[4, 6]", "[24]"});
  expect_error([&] { f.read_into(name, Tensor(hbuf.data(), {4, 6}, DType::bf16)); },
               {name, path, "F32", "BF16", "dtype"});
  expect_error([&] { f.read_into(name, Tensor(buf.data(), {4, 6}, DType::f32, Device::cuda)); }, {name, "cuda"});
  expect_error([&] { f.read_into("missing.weight", Tensor(buf.data(), {4, 6})); }, {"missing.weight", path});
  expect_error([&] { f.info("missing.weight"); }, {"missing.weight", path});
}

TEST_F(Safetensors, WriterRejectsBadInput) {
  std::mt19937 rng(2);
  Buf a({2}, DType::f32, rng);
  const std::string path = p("bad.safetensors");
  expect_error([&] { write_safetensors(path, {{"a", a.t}, {"a", a.t}}); }, {"duplicate", "'a'", path});
  expect_error([&] { write_safetensors(path, {{"__metadata__", a.t}}); }, {"reserved"});
  expect_error([&] { write_safetensors(path, {{"", a.t}}); }, {"empty name"});
  Tensor g = a.t;
  g.device = Device::cuda;
  expect_error([&] { write_safetensors(path, {{"g", g}}); }, {"'g'", "cuda"});
  expect_error([&] { write_safetensors(path, {{"n", Tensor(static_cast<float*>(nullptr), {3})}}); }, {"'n'"});
  expect_error([&] { write_safetensors(p("no_such_dir/x.safetensors"), {{"a", a.t}}); }, {"no_such_dir"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

// ---------------------------------------------------------------------------------------------
// checkpoint directories

class Checkpoint : public TmpDir {
 protected:
  std::string root() const { return (dir_ / "checkpoints").string(); }
  // Saves a step whose directory holds one file, state.json.
  std::string save_simple(int64_t step) {
    return save_checkpoint_dir(root(), step, [&](const std::string& d) {
      write_text_file_atomic(d + "/state.json", "{\"step\": " + std::to_string(step) + "}");
    });
  }
  std::vector<int64_t> steps() const {
    std::vector<int64_t> s;
    for (const auto& e : list_checkpoints(root())) s.push_back(e.step);
    return s;
  }
  std::vector<std::string> root_entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(root())) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(Checkpoint, DirNames) {
  EXPECT_EQ(checkpoint_dir_name(0), "0000000000");
  EXPECT_EQ(checkpoint_dir_name(42), "0000000042");
  EXPECT_EQ(checkpoint_dir_name(12345678901), "12345678901");
  EXPECT_THROW(checkpoint_dir_name(-1), Error);
}

TEST_F(Checkpoint, ListOrderingAndLatest) {
  EXPECT_TRUE(list_checkpoints(root()).empty());  // missing root is fine
  EXPECT_FALSE(latest_checkpoint(root()).has_value());
  for (int64_t s : std::vector<int64_t>{30, 5, 100, 12, 12345678901}) {
    std::string path = save_simple(s);
    EXPECT_EQ(path, (fs::path(root()) / checkpoint_dir_name(s)).string());
    EXPECT_TRUE(is_complete_checkpoint(path));
  }
  EXPECT_EQ(steps(), (std::vector<int64_t>{5, 12, 30, 100, 12345678901}));
  auto latest = latest_checkpoint(root());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 12345678901);
  EXPECT_EQ(read_text_file(latest->path + "/state.json"), "{\"step\": 12345678901}");

  // Things that are not checkpoints are ignored.
  fs::create_directories(fs::path(root()) / "42");           // too short
  fs::create_directories(fs::path(root()) / "00000000200");  // non-canonical: 11 digits, leading zero
  fs::create_directories(fs::path(root()) / "abcdefghij");
  for (const char* d : {"42", "00000000200", "abcdefghij"})
    write_text_file_atomic((fs::path(root()) / d / kCheckpointCompleteMarker).string(), "");
  write_text_file_atomic((fs::path(root()) / "0000000300").string(), "a file, not a dir");
  write_text_file_atomic((fs::path(root()) / "metrics.jsonl").string(), "");
  EXPECT_EQ(steps(), (std::vector<int64_t>{5, 12, 30, 100, 12345678901}));

  EXPECT_THROW(list_checkpoints((fs::path(root()) / "metrics.jsonl").string()), Error);
  EXPECT_THROW(save_simple(-3), Error);
}

TEST_F(Checkpoint, CrashMidwayKeepsPreviousCheckpoint) {
  // A complete checkpoint at step 10 with a tensor file and a JSON state.
  std::mt19937 rng(42);
  Buf w({8, 5}, DType::f32, rng), e({3, 7}, DType::bf16, rng);
  save_checkpoint_dir(root(), 10, [&](const std::string& d) {
    write_safetensors(d + "/consolidated.safetensors", {{"w", w.t}, {"emb", e.t}}, {{"step", "10"}});
    write_text_file_atomic(d + "/train_state_00000.json", R"({"step": 10})");
  });

  // Step 20: the callback writes half the files, then "crashes".
  struct Crash {};
  std::string seen_tmp;
  EXPECT_THROW(save_checkpoint_dir(root(), 20,
                                   [&](const std::string& d) {
                                     seen_tmp = d;
                                     write_safetensors(d + "/consolidated.safetensors", {{"w", w.t}});
                                     throw Crash{};
                                   }),
               Crash);
  EXPECT_NE(seen_tmp.find(".tmp_0000000020_"), std::string::npos) << seen_tmp;
  EXPECT_FALSE(fs::exists(seen_tmp));  // cleaned up after the exception
  EXPECT_FALSE(fs::exists(fs::path(root()) / "0000000020"));

  // What a real crash (kill -9, power loss) leaves: a temp dir from another process, even one that
  // already got its marker, and a step dir without the marker.
  const fs::path leftover = fs::path(root()) / ".tmp_0000000030_999999";
  fs::create_directories(leftover);
  write_text_file_atomic((leftover / "consolidated.safetensors").string(), "half");
  write_text_file_atomic((leftover / kCheckpointCompleteMarker).string(), "");
  const fs::path incomplete = fs::path(root()) / "0000000040";
  fs::create_directories(incomplete);
  write_text_file_atomic((incomplete / "consolidated.safetensors").string(), "half");
  spit((incomplete / "train_state_00000.json.tmp").string(), "{\"st");
  EXPECT_FALSE(is_complete_checkpoint(incomplete.string()));

  auto latest = latest_checkpoint(root());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 10);
  EXPECT_EQ(steps(), std::vector<int64_t>{10});

  // The previous checkpoint is intact.
  SafetensorsFile f = SafetensorsFile::open(latest->path + "/consolidated.safetensors");
  EXPECT_EQ(f.metadata().at("step"), "10");
  std::vector<float> wr(40);
  std::vector<uint16_t> er(21);
  f.read_into("w", Tensor(wr.data(), {8, 5}));
  f.read_into("emb", Tensor(er.data(), {3, 7}, DType::bf16));
  EXPECT_EQ(0, std::memcmp(wr.data(), w.bytes.data(), w.bytes.size()));
  EXPECT_EQ(0, std::memcmp(er.data(), e.bytes.data(), e.bytes.size()));
  EXPECT_EQ(read_text_file(latest->path + "/train_state_00000.json"), R"({"step": 10})");

  // Prune removes the stale temp dir and leaves the incomplete step dir alone.
  prune_checkpoints(root(), 3);
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_TRUE(fs::exists(incomplete));
  EXPECT_EQ(steps(), std::vector<int64_t>{10});

  // Saving over the incomplete step dir replaces it with a complete one.
  save_simple(40);
  EXPECT_EQ(steps(), (std::vector<int64_t>{10, 40}));
  EXPECT_FALSE(fs::exists(incomplete / "consolidated.safetensors"));
  EXPECT_EQ(root_entries(), (std::vector<std::string>{"0000000010", "0000000040"}));
}

TEST_F(Checkpoint, PruneKeepsNewest) {
  for (int64_t s = 1; s <= 6; ++s) save_simple(s * 100);
  prune_checkpoints(root(), 0);  // keep all
  EXPECT_EQ(steps().size(), 6u);
  prune_checkpoints(root(), -1);
  EXPECT_EQ(steps().size(), 6u);
  prune_checkpoints(root(), 10);
  EXPECT_EQ(steps().size(), 6u);
  prune_checkpoints(root(), 2);
  EXPECT_EQ(steps(), (std::vector<int64_t>{500, 600}));
  EXPECT_EQ(root_entries(), (std::vector<std::string>{"0000000500", "0000000600"}));  // nothing left aside
  prune_checkpoints(root(), 1);
  EXPECT_EQ(steps(), std::vector<int64_t>{600});
  EXPECT_EQ(read_text_file(latest_checkpoint(root())->path + "/state.json"), "{\"step\": 600}");
  prune_checkpoints((dir_ / "does_not_exist").string(), 1);  // no-op
}

TEST_F(Checkpoint, ReplaceExistingStep) {
  save_checkpoint_dir(root(), 7, [](const std::string& d) {
    write_text_file_atomic(d + "/a.txt", "old");
    fs::create_directories(d + "/sub");
    write_text_file_atomic(d + "/sub/x.txt", "old sub");
  });
  save_simple(3);
  const std::string path = save_checkpoint_dir(root(), 7, [](const std::string& d) {
    write_text_file_atomic(d + "/b.txt", "new");
  });
  EXPECT_TRUE(is_complete_checkpoint(path));
  EXPECT_FALSE(fs::exists(path + "/a.txt"));
  EXPECT_FALSE(fs::exists(path + "/sub"));
  EXPECT_EQ(read_text_file(path + "/b.txt"), "new");
  EXPECT_EQ(steps(), (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(root_entries(), (std::vector<std::string>{"0000000003", "0000000007"}));

  // A failed re-save leaves the existing step untouched.
  EXPECT_THROW(save_checkpoint_dir(root(), 7, [](const std::string&) { throw std::runtime_error("boom"); }),
               std::runtime_error);
  EXPECT_EQ(read_text_file(path + "/b.txt"), "new");
  EXPECT_TRUE(is_complete_checkpoint(path));
  EXPECT_EQ(root_entries(), (std::vector<std::string>{"0000000003", "0000000007"}));
}

TEST_F(Checkpoint, ReplaceExistingStepWithoutRenameExchange) {
  detail::set_checkpoint_rename_exchange_for_testing(false);
  struct Restore {
    ~Restore() { detail::set_checkpoint_rename_exchange_for_testing(true); }
  } restore;
  save_checkpoint_dir(root(), 9, [](const std::string& d) { write_text_file_atomic(d + "/a.txt", "old"); });
  // A leftover aside dir from an earlier crash of this very process id must not get in the way.
  fs::create_directories(fs::path(root()) / (".old_0000000009_" + std::to_string(::getpid())));
  const std::string path =
      save_checkpoint_dir(root(), 9, [](const std::string& d) { write_text_file_atomic(d + "/b.txt", "new"); });
  EXPECT_FALSE(fs::exists(path + "/a.txt"));
  EXPECT_EQ(read_text_file(path + "/b.txt"), "new");
  EXPECT_EQ(root_entries(), std::vector<std::string>{"0000000009"});
}

TEST_F(Checkpoint, MarkerWrittenLastAndTempDirUsed) {
  std::string final_path = (fs::path(root()) / "0000000005").string();
  save_checkpoint_dir(root(), 5, [&](const std::string& d) {
    EXPECT_NE(d, final_path);
    EXPECT_EQ(fs::path(d).parent_path(), fs::path(root()));
    EXPECT_EQ(fs::path(d).filename().string(), ".tmp_0000000005_" + std::to_string(::getpid()));
    EXPECT_FALSE(fs::exists(fs::path(d) / kCheckpointCompleteMarker));
    EXPECT_FALSE(latest_checkpoint(root()).has_value());  // not visible while being written
  });
  EXPECT_TRUE(is_complete_checkpoint(final_path));
  EXPECT_FALSE(is_complete_checkpoint((fs::path(root()) / "nope").string()));
}

TEST_F(Checkpoint, TextFiles) {
  const std::string path = p("config.yaml");
  write_text_file_atomic(path, "a: 1\n");
  write_text_file_atomic(path, std::string("b: 2\n\0binary", 13));
  EXPECT_EQ(read_text_file(path), std::string("b: 2\n\0binary", 13));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  write_text_file_atomic(p("empty"), "");
  EXPECT_EQ(read_text_file(p("empty")), "");
  expect_error([&] { read_text_file(p("missing.json")); }, {p("missing.json"), "No such file"});
  expect_error([&] { read_text_file(dir_.string()); }, {dir_.string()});
  expect_error([&] { write_text_file_atomic(p("nodir/x.txt"), "x"); }, {"nodir"});
}

// ---------------------------------------------------------------------------------------------
// Train state (train_state_00000.json)

TEST(TrainState, RoundTrip) {
  const TrainState t{12, 11, {{"version", 1}, {"next_batch", 3}}};
  const TrainState back = parse_train_state(train_state_json(t), "train_state_00000.json");
  EXPECT_EQ(back.step, 12);
  EXPECT_EQ(back.optimizer_steps, 11);
  EXPECT_EQ(back.data_loader, t.data_loader);
  // Lingua's own keys beside ours are ignored.
  EXPECT_EQ(parse_train_state(R"({"step": 5, "acc_step": 0, "optimizer_steps": 5, "data_loader": null})", "x").step, 5);
}

// Found by fuzz/fuzz_train_state: a wrong type or a missing key was a nlohmann exception (an
// "internal error"), and a float step (1e300) was converted to an integer it does not fit.
TEST(TrainState, ErrorsNameFileAndKey) {
  const std::string origin = "ckpt/0000000010/train_state_00000.json";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not valid JSON"},
      {"{\"step\": 1", "not valid JSON"},
      {"[1, 2]", "JSON object"},
      {R"({"optimizer_steps": 1, "data_loader": {}})", "'step' is missing"},
      {R"({"step": "3", "optimizer_steps": 1, "data_loader": {}})", "'step' must be an integer"},
      {R"({"step": 1e300, "optimizer_steps": 1, "data_loader": {}})", "'step' must be an integer"},
      {R"({"step": -1, "optimizer_steps": 1, "data_loader": {}})", "'step' must be an integer"},
      {R"({"step": 18446744073709551615, "optimizer_steps": 1, "data_loader": {}})", "'step' must be an integer"},
      {R"({"step": 1, "optimizer_steps": 1.5, "data_loader": {}})", "'optimizer_steps' must be an integer"},
      {R"({"step": 1, "optimizer_steps": 1})", "'data_loader' is missing"},
  };
  for (const auto& [text, needle] : cases) {
    try {
      parse_train_state(text, origin);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(origin), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << "'" << needle << "' not in: " << msg;
    }
  }
}

// Found by fuzz/fuzz_params_json: a params.json that is JSON but not an object reached yaml-cpp's
// operator[] on a scalar (a YAML exception, reported as an internal error).
class ParamsJson : public TmpDir {};

TEST_F(ParamsJson, MustBeAnObject) {
  for (const std::string text : {"1", "\"text\"", "[1, 2]", "null", "true"}) {
    const std::string path = p("params.json");
    spit(path, text);
    try {
      read_params_json(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path + ": expected a mapping (a JSON object)"), std::string::npos) << e.what();
    }
  }
}
