#pragma once
// The safetensors file format (https://github.com/huggingface/safetensors), compatible with the
// Python/Rust library:
//   [8 bytes: little-endian u64 N][N bytes: JSON header, padded with spaces to a multiple of 8][data]
// The header maps each tensor name to {"dtype": "F32"|"BF16"|"I32"|..., "shape": [...],
// "data_offsets": [begin, end]} (byte offsets relative to the start of the data section) plus an
// optional "__metadata__": {string: string}. Tensors are row-major, little-endian, and tile the data
// section exactly (no gaps, no overlap). Our writer lays them out contiguously in header order
// (the order given by the caller), with "__metadata__" first when present.
//
// Checksums: our writer stores, for every tensor, the CRC-32 of its data bytes in "__metadata__"
// under "lingua.crc32.<tensor name>" as 8 lowercase hex digits (zlib's crc32, the one of Python's
// zlib.crc32). Readers that do not know the key ignore it (metadata is free-form strings).
// SafetensorsFile::read_into verifies the checksum of every tensor that has one, so a flipped bit
// in the data is an error naming the tensor and the file instead of silently wrong weights.
// Tensors without a checksum (files written by other tools, e.g. safetensors.torch.save_file) load
// unverified.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lingua/core/tensor.h"

namespace lingua {

// A tensor to write: `view` is a CPU tensor (f32, bf16 or i32) whose memory the caller owns and
// keeps alive for the duration of the call.
// Metadata key prefix of the per-tensor checksums (reserved: callers cannot write such keys).
inline constexpr const char* kSafetensorsChecksumPrefix = "lingua.crc32.";

struct NamedTensor {
  std::string name;
  Tensor view;
};

// Writes `tensors` (in this order), `metadata` and a checksum of each tensor to `path` atomically:
// `path + ".tmp"` is written, fsynced, then renamed over `path`. Fails on duplicate/empty names,
// the reserved name "__metadata__", metadata keys starting with kSafetensorsChecksumPrefix,
// non-CPU tensors or null data.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// What the header says about one tensor.
struct TensorInfo {
  std::string st_dtype;          // safetensors spelling: "F32", "BF16", "I32", "F16", "I64", ...
  std::optional<DType> dtype;    // set when lingua has the dtype (F32, BF16, I32)
  std::vector<int64_t> shape;    // any rank, possibly empty (a scalar)
  uint64_t begin = 0, end = 0;   // byte range within the data section
  std::optional<uint32_t> stored_crc32;  // checksum of the data bytes, when the file has one

  int64_t numel() const;
  std::string shape_str() const;  // "[2, 3]"
};

// A safetensors file opened for reading. The header is parsed and validated by open(); tensor data
// is read on demand with pread (no mmap). Copies share the open file descriptor.
class SafetensorsFile {
 public:
  // Fails (lingua::Error naming the file) on a missing/truncated file, a header length larger than
  // the file, bad JSON, unknown dtypes, bad shapes, offsets out of range / overlapping / leaving
  // gaps, a byte length that does not match shape and dtype, or a checksum entry that is not 8 hex
  // digits or names no tensor of the file.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const { return order_; }  // header order
  bool has(const std::string& name) const { return infos_.count(name) != 0; }
  // Fails naming the tensor and the file when there is no such tensor.
  const TensorInfo& info(const std::string& name) const;
  // The "__metadata__" entries, without the checksums (those are in TensorInfo::stored_crc32).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Copies the tensor's bytes into `dst` (a CPU tensor with memory for it). Fails naming the
  // tensor, the file, and both shapes/dtypes if dst's dtype or shape differs from the file's, and
  // ("checksum mismatch") when the bytes read do not have the stored checksum. On failure dst may
  // hold some or all of the bytes read.
  void read_into(const std::string& name, const Tensor& dst) const;
  // The tensor's bytes as stored (any dtype: info(name).end - begin bytes) into `dst`, the checksum
  // verified as read_into does.
  void read_raw(const std::string& name, void* dst) const;

 private:
  struct Fd;
  std::string path_;
  std::shared_ptr<Fd> fd_;
  uint64_t data_start_ = 0;  // 8 + N
  std::vector<std::string> order_;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// "F32", "BF16", "I32".
const char* safetensors_dtype_name(DType d);

}  // namespace lingua
