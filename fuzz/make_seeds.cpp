// Writes the seed inputs that come from our own writers into fuzz/corpus/<target>/ (committed; run
// again after a format change): safetensors files by write_safetensors, and train states holding
// real DataLoader states of the train_state target's loader at several positions.
//   build/fuzz/make_seeds fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz/data_fixture.h"
#include "lingua/checkpoint/safetensors.h"
#include "lingua/checkpoint/train_state.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <fuzz/corpus directory>\n");
    return 2;
  }
  const std::string out = argv[1];

  // safetensors: the dtypes lingua reads, metadata, a scalar, an empty tensor, no tensors at all.
  std::vector<float> w = {0.5f, -1.0f, 2.0f, 3.25f, 0.0f, -0.125f};
  std::vector<uint16_t> h = {0x3f80, 0xbf80, 0x4000, 0x0000};
  std::vector<int32_t> ids = {7, -3, 42};
  const std::string st = out + "/safetensors/";
  std::filesystem::create_directories(st);
  write_safetensors(st + "weights.safetensors", {{"layers.0.attention.wq.weight", Tensor(w.data(), {2, 3})}},
                    {{"format", "lingua.cpp"}});
  write_safetensors(st + "mixed.safetensors",
                    {{"a", Tensor(h.data(), {2, 2}, DType::bf16)},
                     {"b", Tensor(ids.data(), {3})},
                     {"scalar", Tensor(w.data(), {})},
                     {"empty", Tensor(w.data(), {0, 4})},
                     {"c", Tensor(w.data(), {1, 1, 1, 2, 3})}});
  write_safetensors(st + "metadata_only.safetensors", {}, {{"format", "pt"}, {"note", "no tensors"}});

  // Train states: the fixture loader's state at the start, inside a fill, and after a whole fill.
  const std::string root = lingua_fuzz::scratch_path("corpus");
  const DataConfig cfg = lingua_fuzz::fixed_corpus(root);
  const BytesTokenizer tok;
  DataLoader loader(cfg, tok);
  int64_t step = 0;
  for (int batches : {0, 1, 2, 3}) {
    while (step < batches) {
      loader.next();
      ++step;
    }
    TrainState s{step, step, loader.state()};
    lingua_fuzz::write_file(out + "/train_state/step" + std::to_string(step) + ".json", train_state_json(s));
  }
  std::printf("seeds written under %s\n", out.c_str());
  return 0;
}
