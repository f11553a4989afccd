// Where a command that derives a new checkpoint from an existing one writes it (commands.h).
#include <filesystem>

#include "apps/commands.h"
#include "lingua/checkpoint/checkpoint.h"
#include "lingua/core/error.h"

namespace fs = std::filesystem;

namespace lingua::app {

namespace {

// Whether `p` is `dir` or inside it (both canonical).
bool is_within(const fs::path& p, const fs::path& dir) {
  auto a = p.begin(), b = dir.begin();
  for (; b != dir.end(); ++a, ++b)
    if (a == p.end() || *a != *b) return false;
  return true;
}

}  // namespace

std::string new_checkpoint_dir(const std::string& given, const std::string& checkpoint_dir, const std::string& out_arg,
                               int64_t step) {
  LINGUA_CHECK(!out_arg.empty(), "config key 'out' is required (the root directory of the new checkpoint)");
  // Never touch the original: refuse its root, its step directory and anything inside it, and the
  // path given as ckpt (a dump_dir).
  const fs::path step_dir = fs::weakly_canonical(fs::absolute(checkpoint_dir));
  const fs::path root = step_dir.parent_path();
  const fs::path ckpt = fs::weakly_canonical(fs::absolute(given));
  const fs::path out = fs::weakly_canonical(fs::absolute(out_arg));
  LINGUA_CHECK(out != root && out != ckpt && !is_within(out, step_dir), "config key 'out' (", out_arg,
               ") is the original checkpoint's directory, its root or inside it (", step_dir.string(),
               "): give a new directory, the original is never modified");
  const fs::path dest = out / checkpoint_dir_name(step);
  LINGUA_CHECK(!fs::exists(dest), "config key 'out': ", dest.string(),
               " already exists; remove it or give another 'out' (an existing checkpoint is not overwritten)");
  return out.string();
}

}  // namespace lingua::app
