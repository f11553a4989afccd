#include "lingua/model/step_scalars.h"

#include "lingua/core/error.h"

namespace lingua {

namespace {
constexpr size_t kAlign = 16;
size_t region_base(StepScalars::Writer w) { return w == StepScalars::Writer::host ? 0 : StepScalars::kRegionBytes; }
}  // namespace

StepScalars::StepScalars() : host_(2 * kRegionBytes, 0) {}

size_t StepScalars::slot(const std::string& name, size_t bytes, Writer writer) {
  auto it = slots_.find(name);
  if (it != slots_.end()) {
    LINGUA_CHECK(it->second.second == bytes, "internal error: step scalar '", name, "' asked with ", bytes,
                 " bytes, it has ", it->second.second);
    return it->second.first;
  }
  size_t& used = used_[writer == Writer::host ? 0 : 1];
  const size_t padded = (bytes + kAlign - 1) & ~(kAlign - 1);
  LINGUA_CHECK(used + padded <= kRegionBytes, "internal error: step scalars full (", kRegionBytes,
               " bytes per region) adding '", name, "'");
  const size_t off = region_base(writer) + used;
  used += padded;
  slots_[name] = {off, bytes};
  return off;
}

char* StepScalars::base() const {
  return device_ == Device::cuda ? dev_.as<char>() : const_cast<char*>(host_.data());
}

char* StepScalars::staging() { return device_ == Device::cuda ? staging_.data() : host_.data(); }

void StepScalars::upload() {
  if (device_ != Device::cuda || used_[0] == 0) return;
  copy_to_device_async(dev_.data(), staging_.data(), used_[0]);
}

void StepScalars::read(size_t offset, void* dst, size_t bytes) const {
  if (device_ == Device::cuda) copy_to_host(dst, dev_.as<char>() + offset, bytes);
  else std::memcpy(dst, host_.data() + offset, bytes);
}

void StepScalars::to_device(Device device) {
  if (device == device_) return;
  LINGUA_CHECK(device == Device::cuda, "internal error: step scalars move from the CPU to CUDA only");
  dev_ = DeviceBuffer(2 * kRegionBytes);
  copy_to_device(dev_.data(), host_.data(), host_.size());
  staging_.assign(host_.begin(), host_.begin() + kRegionBytes);
  host_.clear();
  host_.shrink_to_fit();
  device_ = device;
}

}  // namespace lingua
