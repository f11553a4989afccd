// Fuzz target: the safetensors reader (lingua/checkpoint/safetensors.h). Input: the file's bytes.
// Properties of an accepted file: every tensor's byte range holds exactly its shape and dtype, the
// ranges tile the data section, read_into returns those bytes of the file, and a destination of
// another dtype or shape is refused.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "lingua/checkpoint/safetensors.h"

using namespace lingua;

namespace {

size_t st_dtype_bytes(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  return 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lingua_fuzz::scratch_path("t.safetensors");
  lingua_fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  SafetensorsFile f;
  try {
    f = SafetensorsFile::open(path);
  } catch (const Error&) {
    return 0;
  }
  FUZZ_CHECK(size >= 8, "accepted a file of ", size, " bytes");
  uint64_t header = 0;
  for (int i = 0; i < 8; ++i) header |= uint64_t(data[i]) << (8 * i);
  const uint64_t data_start = 8 + header, data_size = size - data_start;

  uint64_t covered = 0;
  std::vector<char> buf;
  for (const std::string& name : f.names()) {
    const TensorInfo& t = f.info(name);
    FUZZ_CHECK(t.begin <= t.end && t.end <= data_size, "tensor '", name, "' range [", t.begin, ", ", t.end, ")");
    const int64_t numel = t.numel();
    FUZZ_CHECK(numel >= 0, "tensor '", name, "' numel ", numel);
    FUZZ_CHECK(uint64_t(numel) * st_dtype_bytes(t.st_dtype) == t.end - t.begin, "tensor '", name, "' ", t.shape_str(),
               " ", t.st_dtype, " in ", t.end - t.begin, " bytes");
    covered += t.end - t.begin;
    if (!t.dtype || t.shape.size() > size_t(kMaxDims)) continue;

    buf.assign(t.end - t.begin, 0);
    Tensor dst;
    dst.data = buf.data();
    dst.dtype = *t.dtype;
    dst.ndim = static_cast<int>(t.shape.size());
    for (int d = 0; d < dst.ndim; ++d) dst.shape[d] = t.shape[d];
    lingua_fuzz::must_succeed("reading a tensor of an accepted file", [&] { f.read_into(name, dst); });
    FUZZ_CHECK(std::memcmp(buf.data(), data + data_start + t.begin, buf.size()) == 0, "tensor '", name,
               "': read_into returned other bytes than the file's");

    Tensor other = dst;  // another dtype of the same size, then another shape: refused
    other.dtype = dst.dtype == DType::f32 ? DType::i32 : DType::f32;
    if (dtype_size(other.dtype) == dtype_size(dst.dtype)) {
      bool refused = false;
      try {
        f.read_into(name, other);
      } catch (const Error&) {
        refused = true;
      }
      FUZZ_CHECK(refused, "tensor '", name, "' read into a destination of another dtype");
    }
    if (dst.ndim < kMaxDims) {
      other = dst;
      other.shape[other.ndim++] = 1;
      bool refused = false;
      try {
        f.read_into(name, other);
      } catch (const Error&) {
        refused = true;
      }
      FUZZ_CHECK(refused, "tensor '", name, "' read into a destination of another shape");
    }
  }
  FUZZ_CHECK(covered == data_size, "tensors cover ", covered, " of ", data_size, " data bytes");
  return 0;
}
