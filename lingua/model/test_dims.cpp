#include <gtest/gtest.h>

#include <string>

#include "lingua/core/error.h"
#include "lingua/model/dims.h"

using namespace lingua;

namespace {

ModelConfig small() {
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.multiple_of = 16;
  c.max_seqlen = 64;
  return c;
}

std::string error_of(const ModelConfig& c) {
  try {
    resolve_dims(c, 258);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(Dims, HugeFfnMultiplierNamesTheKeyAndTheLimit) {
  ModelConfig c = small();
  c.ffn_dim_multiplier = 1e308;
  std::string e = error_of(c);
  EXPECT_TRUE(has(e, "model.ffn_dim_multiplier (1e+308)")) << e;
  EXPECT_TRUE(has(e, "2147483647")) << e;
  c.ffn_dim_multiplier = 1e7;  // finite in double, over int32 once scaled
  EXPECT_TRUE(has(error_of(c), "model.ffn_dim_multiplier")) << error_of(c);
  c.ffn_dim_multiplier = 1e-6;  // rounds the hidden size to 0
  EXPECT_TRUE(has(error_of(c), "is 0")) << error_of(c);
  // Ordinary values are unchanged (Lingua's formula).
  EXPECT_EQ(ffn_hidden_dim(4096, 256, 1.3), 14336);
  EXPECT_EQ(ffn_hidden_dim(32, 16, std::nullopt), 96);
}

TEST(Dims, ContextOverThisMachinesMemoryNamesMaxSeqlen) {
  ModelConfig c = small();
  c.head_dim = 256;
  c.max_seqlen = 2000000000;  // a 1.9 TiB RoPE table
  const std::string e = error_of(c);
  EXPECT_TRUE(has(e, "'model.max_seqlen' (2000000000)")) << e;
  EXPECT_TRUE(has(e, "of memory")) << e;
}

TEST(Dims, ModelOverThisMachinesMemoryNamesTheSizes) {
  ModelConfig c = small();
  c.dim = 65536;
  c.n_layers = 4096;
  c.n_heads = 64;
  const std::string e = error_of(c);
  for (const char* k : {"model.dim 65536", "model.n_layers 4096", "FFN hidden size", "of memory"})
    EXPECT_TRUE(has(e, k)) << k << ": " << e;
}

TEST(Dims, MaxSeqlenMustBeSet) {
  ModelConfig c = small();
  c.max_seqlen.reset();
  EXPECT_TRUE(has(error_of(c), "'model.max_seqlen' is not set")) << error_of(c);
  c.max_seqlen = 0;
  EXPECT_TRUE(has(error_of(c), "'model.max_seqlen' must be positive")) << error_of(c);
}
