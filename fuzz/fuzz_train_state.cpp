// Fuzz target: a checkpoint's train_state_00000.json as resuming reads it: parse_train_state
// (lingua/checkpoint/train_state.h), then DataLoader::load_state with its "data_loader" on a
// loader over a fixed small corpus (fuzz/data_fixture.h; fuzz/corpus/train_state holds states of
// this loader written by make_seeds), then two batches.
// Properties: an accepted state gives batches of in-vocabulary ids; a train state written by
// train_state_json reads back the same.
#include <cstdint>
#include <string>

#include "fuzz/data_fixture.h"
#include "lingua/checkpoint/train_state.h"
#include "lingua/data/loader.h"
#include "lingua/data/tokenizer.h"

using namespace lingua;

namespace {

const DataConfig& corpus_config() {
  static const DataConfig cfg = lingua_fuzz::fixed_corpus(lingua_fuzz::scratch_path("corpus"));
  return cfg;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  corpus_config();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  TrainState st;
  try {
    st = parse_train_state(text, "train_state_00000.json");
  } catch (const Error&) {
    return 0;
  }
  FUZZ_CHECK(st.step >= 0 && st.optimizer_steps >= 0, "negative counters ", st.step, ", ", st.optimizer_steps);
  const TrainState back = lingua_fuzz::must_succeed("a written train state reads back", [&] {
    return parse_train_state(train_state_json(st), "written");
  });
  FUZZ_CHECK(back.step == st.step && back.optimizer_steps == st.optimizer_steps && back.data_loader == st.data_loader &&
                 back.resplit_from == st.resplit_from && back.resplit_step == st.resplit_step,
             "train state round trip changed it");

  const BytesTokenizer tok;
  const DataConfig& cfg = corpus_config();
  DataLoader loader(cfg, tok);
  try {
    loader.load_state(st.data_loader);
  } catch (const Error&) {
    return 0;
  }
  try {
    for (int i = 0; i < 2; ++i) lingua_fuzz::check_batch(loader.next(), cfg, tok.n_words());
  } catch (const Error&) {
    // Clean, if late: some states are only found not to fit when the file is read (an offset past
    // its end).
  }
  return 0;
}
