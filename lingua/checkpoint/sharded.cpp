#include "lingua/checkpoint/sharded.h"

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "lingua/checkpoint/train_checkpoint.h"

namespace fs = std::filesystem;

namespace lingua {

namespace {

constexpr const char* kShapePrefix = "lingua.shape.";

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// "<name>:flat:<k>:<S>" / "<name>:cols:<k>:<S>" for a split placement; "<name>" for whole.
std::string piece_key(const std::string& name, const Placement& p) {
  if (p.kind == Placement::whole) return name;
  return name + (p.kind == Placement::flat_shard ? ":flat:" : ":cols:") + std::to_string(p.rank) + ":" +
         std::to_string(p.size);
}

// A ParamInfo with only what global_index needs, for a piece of a tensor of `shape`.
ParamInfo piece_info(const std::vector<int64_t>& shape, const Placement& pl) {
  ParamInfo p;
  p.shape = shape;
  p.placement = pl;
  if (pl.kind == Placement::flat_shard) {
    p.local_shape = {(p.full_numel() + pl.size - 1) / pl.size};
  } else {
    p.local_shape = shape;
    if (pl.kind == Placement::column_slice) p.local_shape.back() /= pl.size;
  }
  p.numel = product(p.local_shape);
  return p;
}

Tensor host_view(const float* data, const std::vector<int64_t>& shape) {
  Tensor t(const_cast<float*>(data), {product(shape)});
  t.ndim = (int)shape.size();
  for (int d = 0; d < t.ndim; ++d) t.shape[d] = shape[d];
  return t;
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text).get<std::vector<int64_t>>();
  } catch (const std::exception& e) {
    fail(where, ": unreadable shape '", text, "': ", e.what());
  }
}

}  // namespace

std::string checkpoint_shard_name(int rank) {
  char b[64];
  std::snprintf(b, sizeof b, "shard_%05d.safetensors", rank);
  return b;
}

void write_checkpoint_shard(const std::string& dir, const ParamStore& store, const AdamW* opt, int rank, int world) {
  const std::string path = dir + "/" + checkpoint_shard_name(rank);
  std::vector<std::vector<float>> host;  // copies for the write, freed after it
  std::vector<std::pair<std::string, std::vector<int64_t>>> names;
  std::map<std::string, std::string> meta{{"format", "lingua.cpp shard"}, {"rank", std::to_string(rank)},
                                          {"world", std::to_string(world)}};
  const std::vector<int> ids = store.ids();
  for (size_t i = 0; i < ids.size(); ++i) {
    const ParamInfo& p = store.info(ids[i]);
    const Placement& pl = p.placement;
    if (pl.kind == Placement::whole) {
      if ((int)(i % (size_t)world) != rank) continue;
    } else {
      LINGUA_CHECK(world % pl.size == 0 && pl.rank == rank % pl.size, "internal error: parameter '", p.name,
                   "' is piece ", pl.rank, " of ", pl.size, " on rank ", rank, " of ", world);
      if (rank / pl.size != (int)(i % (size_t)(world / pl.size))) continue;
      meta[kShapePrefix + p.name] = shape_str(p.shape);
    }
    host.push_back(store.host_param(ids[i]));
    int64_t bad = 0;
    for (int64_t k = 0; k < p.numel; ++k) bad += p.global_index(k) >= 0 && !std::isfinite(host.back()[k]);
    if (bad) fail("refusing to write ", path, ": parameter '", p.name, "' has ", bad, " non-finite values");
    names.push_back({piece_key(p.name, pl), p.local_shape});
    if (!opt || !store.trainable(ids[i])) continue;
    for (int which = 0; which < 2; ++which) {
      host.push_back(which == 0 ? opt->host_m(ids[i]) : opt->host_v(ids[i]));
      const std::string moment = CheckpointFiles::moment(which, p.name);
      names.push_back({piece_key(moment, pl), p.local_shape});
      if (pl.kind != Placement::whole) meta[kShapePrefix + moment] = shape_str(p.shape);
    }
  }
  std::vector<NamedTensor> ts;
  for (size_t k = 0; k < names.size(); ++k) ts.push_back({names[k].first, host_view(host[k].data(), names[k].second)});
  write_safetensors(path, ts, meta);
}

CheckpointTensors CheckpointTensors::open(const std::string& dir_or_file) {
  CheckpointTensors c;
  c.where_ = dir_or_file;
  LINGUA_CHECK(fs::exists(dir_or_file), "checkpoint not found: ", dir_or_file);
  std::vector<std::string> paths;
  if (!fs::is_directory(dir_or_file)) {
    paths.push_back(dir_or_file);
  } else if (fs::exists(fs::path(dir_or_file) / CheckpointFiles::weights)) {
    paths.push_back((fs::path(dir_or_file) / CheckpointFiles::weights).string());
    const fs::path opt = fs::path(dir_or_file) / CheckpointFiles::optimizer;
    if (fs::exists(opt)) paths.push_back(opt.string());
  } else {
    for (int r = 0; fs::exists(fs::path(dir_or_file) / checkpoint_shard_name(r)); ++r)
      paths.push_back((fs::path(dir_or_file) / checkpoint_shard_name(r)).string());
    LINGUA_CHECK(!paths.empty(), "checkpoint ", dir_or_file, " has neither ", CheckpointFiles::weights, " nor ",
                 checkpoint_shard_name(0));
    c.sharded_ = true;
    // Written by `world` ranks: every shard must be there (a lost one is named, not skipped).
    const SafetensorsFile first = SafetensorsFile::open(paths[0]);
    const std::map<std::string, std::string>& meta = first.metadata();
    const auto w = meta.find("world");
    LINGUA_CHECK(w != meta.end(), "checkpoint ", paths[0], " does not say how many ranks wrote it (metadata 'world')");
    const int world = std::atoi(w->second.c_str());
    LINGUA_CHECK(world == (int)paths.size(), "checkpoint ", dir_or_file, " was written by ", w->second,
                 " ranks but has ", paths.size(), " shard file(s): ", checkpoint_shard_name((int)paths.size()),
                 " is missing");
  }
  for (const std::string& path : paths) {
    c.files_.push_back(SafetensorsFile::open(path));
    const SafetensorsFile& f = c.files_.back();
    const int file = (int)c.files_.size() - 1;
    for (const std::string& key : f.names()) {
      const size_t colon = key.find(':');
      if (colon == std::string::npos) {
        Entry& e = c.entries_[key];
        LINGUA_CHECK(e.pieces.empty(), "checkpoint ", dir_or_file, ": tensor '", key, "' is in ",
                     c.files_[e.pieces.front().file].path(), " and in ", path);
        e.shape = f.info(key).shape;
        e.pieces.push_back({file, key, Placement::Whole()});
        continue;
      }
      // name:kind:k:S
      const std::string name = key.substr(0, colon);
      char kind[8] = {};
      int k = -1, S = 0;
      LINGUA_CHECK(std::sscanf(key.c_str() + colon + 1, "%4[a-z]:%d:%d", kind, &k, &S) == 3 &&
                       (std::string(kind) == "flat" || std::string(kind) == "cols") && S >= 1 && k >= 0 && k < S,
                   "checkpoint ", path, ": tensor name '", key, "' is not <name>:flat|cols:<k>:<S>");
      const auto shape = f.metadata().find(kShapePrefix + name);
      LINGUA_CHECK(shape != f.metadata().end(), "checkpoint ", path, ": no full shape (", kShapePrefix, name,
                   ") for piece '", key, "'");
      Entry& e = c.entries_[name];
      const std::vector<int64_t> full = parse_shape(shape->second, path);
      LINGUA_CHECK(e.pieces.empty() || e.shape == full, "checkpoint ", path, ": tensor '", name, "' has shape ",
                   shape_str(full), " here and ", shape_str(e.shape), " in another shard");
      e.shape = full;
      const Placement pl = std::string(kind) == "flat" ? Placement::FlatShard(S, k) : Placement::ColumnSlice(S, k);
      LINGUA_CHECK(f.info(key).shape == piece_info(full, pl).local_shape, "checkpoint ", path, ": piece '", key,
                   "' has shape ", f.info(key).shape_str(), " for a tensor of ", shape_str(full));
      e.pieces.push_back({file, key, pl});
    }
  }
  return c;
}

std::vector<std::string> CheckpointTensors::names() const {
  std::vector<std::string> n;
  for (const auto& [name, e] : entries_) n.push_back(name);
  return n;
}

const std::vector<int64_t>& CheckpointTensors::shape(const std::string& name) const {
  const auto it = entries_.find(name);
  LINGUA_CHECK(it != entries_.end(), "checkpoint ", where_, " has no tensor '", name, "'");
  return it->second.shape;
}

void CheckpointTensors::read(const std::string& name, const Tensor& dst) const {
  shape(name);  // (fails naming a missing tensor)
  const Entry& e = entries_.at(name);
  LINGUA_CHECK(dst.device == Device::cpu && dst.dtype == DType::f32 && dst.numel() == product(e.shape),
               "internal error: reading '", name, "' of ", shape_str(e.shape), " into ", dst.str());
  const Piece& first = e.pieces.front();
  if (first.placement.kind == Placement::whole) return files_[first.file].read_into(first.key, host_view(dst.f32(), e.shape));
  // Pieces: each of the S must be there once, all of one kind.
  const int S = first.placement.size;
  std::vector<int> seen(S, 0);
  for (const Piece& p : e.pieces) {
    LINGUA_CHECK(p.placement.kind == first.placement.kind && p.placement.size == S, "checkpoint ", where_,
                 ": tensor '", name, "' has pieces of different splits ('", first.key, "', '", p.key, "')");
    ++seen[p.placement.rank];
  }
  for (int k = 0; k < S; ++k)
    LINGUA_CHECK(seen[k] == 1, "checkpoint ", where_, ": tensor '", name, "' has ", seen[k], " copies of piece ", k,
                 " of ", S, " (a shard file is missing or was written twice)");
  std::vector<float> local;
  float* out = dst.f32();
  for (const Piece& p : e.pieces) {
    const ParamInfo info = piece_info(e.shape, p.placement);
    local.resize(info.numel);
    files_[p.file].read_into(p.key, host_view(local.data(), info.local_shape));
    for (int64_t i = 0; i < info.numel; ++i)
      if (const int64_t g = info.global_index(i); g >= 0) out[g] = local[i];
  }
}

void CheckpointTensors::read_local(const std::string& name, const ParamInfo& p, std::vector<float>& local) const {
  LINGUA_CHECK(shape(name) == p.shape, "internal error: reading '", name, "' of ", shape_str(shape(name)), " as ",
               shape_str(p.shape));
  local.assign(p.numel, 0.0f);
  for (const Piece& piece : entries_.at(name).pieces)
    if (piece.placement.kind == p.placement.kind && piece.placement.size == p.placement.size &&
        piece.placement.rank == p.placement.rank && p.placement.kind != Placement::whole)
      return files_[piece.file].read_into(piece.key, host_view(local.data(), p.local_shape));
  std::vector<float> full(product(p.shape));
  read(name, host_view(full.data(), p.shape));
  if (p.placement.kind == Placement::whole) {
    local = std::move(full);
    return;
  }
  for (int64_t i = 0; i < p.numel; ++i)
    if (const int64_t g = p.global_index(i); g >= 0) local[i] = full[g];
}

int consolidate_checkpoint(const std::string& dir) {
  const CheckpointTensors c = CheckpointTensors::open(dir);
  if (!c.sharded()) return 0;
  std::vector<std::vector<float>> values;
  std::vector<NamedTensor> weights, moments;
  const std::vector<std::string> names = c.names();
  values.reserve(names.size());
  for (const std::string& name : names) {
    values.emplace_back(product(c.shape(name)));
    const Tensor t = host_view(values.back().data(), c.shape(name));
    c.read(name, t);
    const bool moment = name.rfind("exp_avg.", 0) == 0 || name.rfind("exp_avg_sq.", 0) == 0;
    (moment ? moments : weights).push_back({name, t});
  }
  if (!moments.empty()) write_safetensors(dir + "/" + CheckpointFiles::optimizer, moments);
  write_safetensors(dir + "/" + CheckpointFiles::weights, weights, {{"format", "lingua.cpp"}});
  for (int r = 0; fs::exists(fs::path(dir) / checkpoint_shard_name(r)); ++r)
    fs::remove(fs::path(dir) / checkpoint_shard_name(r));
  return (int)names.size();
}

}  // namespace lingua
