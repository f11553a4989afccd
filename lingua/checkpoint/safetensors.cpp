#include "lingua/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include <zlib.h>

#include "lingua/checkpoint/atomic_file.h"

namespace lingua {

// The format is little-endian and we copy tensor memory byte for byte.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using ojson = nlohmann::ordered_json;

// Same limit as the reference implementation: a larger header is almost surely a corrupt length.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

// Element sizes of the safetensors dtypes we can validate (sub-byte float types are not handled).
std::optional<size_t> st_dtype_size(const std::string& s) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"F64", 8}, {"I64", 8}, {"U64", 8}};
  auto it = sizes.find(s);
  if (it == sizes.end()) return std::nullopt;
  return it->second;
}

std::optional<DType> lingua_dtype(const std::string& s) {
  if (s == "F32") return DType::f32;
  if (s == "BF16") return DType::bf16;
  if (s == "I32") return DType::i32;
  return std::nullopt;
}

uint32_t crc32_of(const void* data, size_t n) {
  return static_cast<uint32_t>(::crc32_z(::crc32_z(0, nullptr, 0), static_cast<const Bytef*>(data), n));
}

std::string crc32_hex(uint32_t crc) {
  char b[16];
  std::snprintf(b, sizeof b, "%08x", crc);
  return b;
}

// The checksum of a metadata value: exactly 8 hex digits, else nullopt.
std::optional<uint32_t> parse_crc32_hex(const std::string& s) {
  if (s.size() != 8 || s.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return std::nullopt;
  return static_cast<uint32_t>(std::stoul(s, nullptr, 16));
}

bool is_checksum_key(const std::string& key) { return key.rfind(kSafetensorsChecksumPrefix, 0) == 0; }

std::string tensor_shape_str(const Tensor& t) {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.shape[i];
  os << "]";
  return os.str();
}

}  // namespace

const char* safetensors_dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
  }
  return "?";
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const { return lingua::shape_str(shape); }

// ---------------------------------------------------------------------------------------------
// Writer

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  ojson header = ojson::object();
  ojson meta = ojson::object();
  for (const auto& [k, v] : metadata) {
    LINGUA_CHECK(!is_checksum_key(k), "write_safetensors '", path, "': metadata key '", k,
                 "' is reserved for the checksums the writer adds (prefix '", kSafetensorsChecksumPrefix, "')");
    meta[k] = v;
  }
  header["__metadata__"] = ojson::object();  // first in the header; filled below
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const NamedTensor& nt : tensors) {
    const Tensor& t = nt.view;
    LINGUA_CHECK(!nt.name.empty(), "write_safetensors '", path, "': a tensor has an empty name");
    LINGUA_CHECK(nt.name != "__metadata__", "write_safetensors '", path,
                 "': '__metadata__' is reserved and cannot be a tensor name");
    LINGUA_CHECK(seen.insert(nt.name).second, "write_safetensors '", path, "': duplicate tensor name '",
                 nt.name, "'");
    LINGUA_CHECK(t.device == Device::cpu, "write_safetensors '", path, "': tensor '", nt.name,
                 "' is on ", device_name(t.device), "; copy it to the CPU first");
    for (int i = 0; i < t.ndim; ++i)
      LINGUA_CHECK(t.shape[i] >= 0, "write_safetensors '", path, "': tensor '", nt.name,
                   "' has a negative dimension: ", t.str());
    LINGUA_CHECK(t.data != nullptr || t.nbytes() == 0, "write_safetensors '", path, "': tensor '",
                 nt.name, "' has no data");
    ojson shape = ojson::array();
    for (int i = 0; i < t.ndim; ++i) shape.push_back(t.shape[i]);
    uint64_t n = t.nbytes();
    header[nt.name] = {{"dtype", safetensors_dtype_name(t.dtype)},
                       {"shape", std::move(shape)},
                       {"data_offsets", {offset, offset + n}}};
    meta[kSafetensorsChecksumPrefix + nt.name] = crc32_hex(crc32_of(t.data, n));
    offset += n;
  }
  if (meta.empty()) header.erase("__metadata__");
  else header["__metadata__"] = std::move(meta);
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not valid UTF-8
    fail("write_safetensors '", path, "': cannot encode the header: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));

  AtomicFileWriter w(path);
  w.write(len, 8);
  w.write(text.data(), text.size());
  for (const NamedTensor& nt : tensors)
    if (nt.view.nbytes() > 0) w.write(nt.view.data, nt.view.nbytes());
  w.commit();
}

// ---------------------------------------------------------------------------------------------
// Reader

struct SafetensorsFile::Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

namespace {

// Reads exactly n bytes at offset; false if the file ends first.
bool pread_all(int fd, void* dst, size_t n, uint64_t offset, std::string* err) {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      *err = std::strerror(errno);
      return false;
    }
    if (r == 0) {
      *err = "unexpected end of file";
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto bad = [&](auto&&... a) { fail("safetensors file '", path, "': ", a...); };

  SafetensorsFile f;
  f.path_ = path;
  f.fd_ = std::make_shared<Fd>();
  f.fd_->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd_->fd < 0) bad("cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(f.fd_->fd, &st) != 0) bad("cannot stat: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) bad("not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  if (file_size < 8) bad("truncated: ", file_size, " bytes, too short for the 8-byte header length");
  unsigned char len[8];
  std::string err;
  if (!pread_all(f.fd_->fd, len, 8, 0, &err)) bad("cannot read the header length: ", err);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  if (n > kMaxHeaderSize) bad("header length ", n, " is implausibly large (limit ", kMaxHeaderSize, ")");
  if (n > file_size - 8)
    bad("truncated: the header length is ", n, " bytes but only ", file_size - 8,
        " bytes follow the length field");
  if (n < 2) bad("header of ", n, " bytes is too short to hold a JSON object");

  std::string text(n, '\0');
  if (!pread_all(f.fd_->fd, text.data(), n, 8, &err)) bad("cannot read the header: ", err);
  if (text[0] != '{') bad("the header does not start with '{' (not a safetensors file?)");

  // Reject duplicate top-level keys, which JSON parsers silently merge.
  std::set<std::string> keys;
  std::string dup;
  auto cb = [&](int depth, ojson::parse_event_t ev, ojson& parsed) {
    if (depth == 1 && ev == ojson::parse_event_t::key && dup.empty()) {
      std::string k = parsed.get<std::string>();
      if (!keys.insert(k).second) dup = k;
    }
    return true;
  };
  ojson header;
  try {
    header = ojson::parse(text, cb);
  } catch (const nlohmann::json::exception& e) {
    bad("the header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) bad("the header is not a JSON object");
  if (!dup.empty()) bad("tensor '", dup, "' appears twice in the header");

  const uint64_t data_size = file_size - 8 - n;
  f.data_start_ = 8 + n;
  std::map<std::string, uint32_t> checksums;  // tensor name -> stored crc32
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const ojson& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) bad("'__metadata__' must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) bad("metadata value for '", m.key(), "' is not a string");
        const std::string value = m.value().get<std::string>();
        if (!is_checksum_key(m.key())) {
          f.metadata_[m.key()] = value;
          continue;
        }
        std::optional<uint32_t> crc = parse_crc32_hex(value);
        if (!crc) bad("metadata '", m.key(), "': checksum '", value, "' is not 8 hex digits");
        checksums[m.key().substr(std::strlen(kSafetensorsChecksumPrefix))] = *crc;
      }
      continue;
    }
    auto tbad = [&](auto&&... a) { bad("tensor '", name, "': ", a...); };
    if (!v.is_object()) tbad("header entry is not an object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) tbad("missing '", field, "'");
    TensorInfo info;
    if (!v["dtype"].is_string()) tbad("'dtype' is not a string");
    info.st_dtype = v["dtype"].get<std::string>();
    std::optional<size_t> esize = st_dtype_size(info.st_dtype);
    if (!esize) tbad("unknown dtype '", info.st_dtype, "'");
    info.dtype = lingua_dtype(info.st_dtype);

    const ojson& shape = v["shape"];
    if (!shape.is_array()) tbad("'shape' is not an array");
    uint64_t numel = 1;
    for (const ojson& d : shape) {
      if (!d.is_number_unsigned()) tbad("'shape' ", shape.dump(), " has an entry that is not a non-negative integer");
      uint64_t dim = d.get<uint64_t>();
      // Every partial product must fit int64_t: TensorInfo::numel() multiplies in this order
      // ([2^62, 3, 0] holds 0 elements but overflows on the way).
      if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel) || numel > uint64_t(INT64_MAX))
        tbad("shape ", shape.dump(), " is too large");
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, uint64_t(*esize), &nbytes)) tbad("shape ", shape.dump(), " is too large");

    const ojson& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      tbad("'data_offsets' must be [begin, end] with non-negative integers, got ", off.dump());
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    if (info.end < info.begin) tbad("data_offsets [", info.begin, ", ", info.end, "] end before they begin");
    if (info.end > data_size)
      tbad("data_offsets [", info.begin, ", ", info.end, "] go beyond the end of the file (the data section has ",
           data_size, " bytes; truncated file?)");
    if (info.end - info.begin != nbytes)
      tbad("shape ", info.shape_str(), " ", info.st_dtype, " needs ", nbytes, " bytes but data_offsets [",
           info.begin, ", ", info.end, "] hold ", info.end - info.begin);
    f.order_.push_back(name);
    f.infos_.emplace(name, std::move(info));
  }

  for (const auto& [name, crc] : checksums) {
    auto it = f.infos_.find(name);
    if (it == f.infos_.end()) bad("metadata has a checksum for tensor '", name, "', which the file does not hold");
    it->second.stored_crc32 = crc;
  }

  // The tensors must tile the data section exactly, as the reference implementation requires.
  std::vector<const std::pair<const std::string, TensorInfo>*> by_offset;
  for (const auto& e : f.infos_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return std::pair(a->second.begin, a->second.end) < std::pair(b->second.begin, b->second.end);
  });
  uint64_t pos = 0;
  std::string prev;
  for (auto* e : by_offset) {
    const TensorInfo& t = e->second;
    if (t.begin < pos)
      bad("tensor '", e->first, "' (data_offsets [", t.begin, ", ", t.end, "]) overlaps tensor '", prev, "'");
    if (t.begin > pos)
      bad("gap in the data section: bytes [", pos, ", ", t.begin, ") belong to no tensor (before tensor '",
          e->first, "')");
    pos = t.end;
    prev = e->first;
  }
  if (pos != data_size)
    bad("the data section has ", data_size, " bytes but the tensors cover only ", pos, " (trailing bytes)");
  return f;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) fail("safetensors file '", path_, "': no tensor named '", name, "'");
  return it->second;
}

void SafetensorsFile::read_into(const std::string& name, const Tensor& dst) const {
  const TensorInfo& t = info(name);
  auto mismatch = [&](const char* what) {
    fail("safetensors file '", path_, "': tensor '", name, "' ", what, ": the file has ", t.shape_str(), " ",
         t.st_dtype, ", the destination is ", tensor_shape_str(dst), " ", safetensors_dtype_name(dst.dtype));
  };
  if (!t.dtype) mismatch("has a dtype lingua cannot load");
  if (*t.dtype != dst.dtype) mismatch("has a different dtype");
  bool same = dst.ndim == static_cast<int>(t.shape.size());
  for (int i = 0; same && i < dst.ndim; ++i) same = dst.shape[i] == t.shape[i];
  if (!same) mismatch("has a different shape");
  LINGUA_CHECK(dst.device == Device::cpu, "safetensors file '", path_, "': tensor '", name,
               "': the destination is on ", device_name(dst.device), "; read into CPU memory");
  read_raw(name, dst.data);
}

void SafetensorsFile::read_raw(const std::string& name, void* dst) const {
  const TensorInfo& t = info(name);
  size_t n = t.end - t.begin;
  if (n == 0) return;
  LINGUA_CHECK(dst != nullptr, "safetensors file '", path_, "': tensor '", name, "': the destination has no memory");
  std::string err;
  if (!pread_all(fd_->fd, dst, n, data_start_ + t.begin, &err))
    fail("safetensors file '", path_, "': cannot read tensor '", name, "': ", err);
  if (t.stored_crc32) {
    const uint32_t computed = crc32_of(dst, n);
    if (computed != *t.stored_crc32)
      fail("checksum mismatch: tensor '", name, "' in ", path_, " (stored crc32 ", crc32_hex(*t.stored_crc32),
           ", computed ", crc32_hex(computed), "): the file is corrupt");
  }
}

}  // namespace lingua
