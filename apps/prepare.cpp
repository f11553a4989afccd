#include <cstdio>

#include "apps/commands.h"
#include "lingua/config/config.h"
#include "lingua/data/prepare.h"

namespace lingua::app {

namespace {
struct PrepareCommandConfig {
  std::vector<std::string> inputs;
  std::string out_dir;
  std::string source = "corpus";
  int n_chunks = 1;
  double val_fraction = 0.01;
  int64_t val_docs = -1;
  int64_t min_doc_chars = 2000;
  int64_t seed = 42;
  bool overwrite = false;
  template <class V> void visit(V& v) {
    v("inputs", inputs, "input files (.txt or .jsonl, or gzip-compressed: .txt.gz, .jsonl.gz); bare arguments are inputs too");
    v("out_dir", out_dir, "corpus root (the training config's data.root_dir)");
    v("source", source, "source name: the sub-directory and file prefix");
    v("n_chunks", n_chunks, "training chunk files");
    v("val_fraction", val_fraction,
      "share of documents held out for validation (at least one when > 0 and there are 2 or more; 0: none, no "
      "*.val.jsonl written)");
    v("val_docs", val_docs, "exact number of validation documents (overrides val_fraction when >= 0)");
    v("min_doc_chars", min_doc_chars, ".txt inputs: paragraphs are grouped into documents of at least this");
    v("seed", seed, "shuffle seed");
    v("overwrite", overwrite, "replace this source's existing files");
  }
};
}  // namespace

int prepare_main(const Args& args) {
  if (print_help_if_asked<PrepareCommandConfig>(args, "lingua prepare out_dir=DIR source=NAME file.txt [file.jsonl ...] [key=value ...]")) return 0;
  Args keyed, files;
  for (auto& a : args) (a.find('=') == std::string::npos ? files : keyed).push_back(a);
  PrepareCommandConfig c = parse_config<PrepareCommandConfig>(keyed);
  c.inputs.insert(c.inputs.end(), files.begin(), files.end());
  LINGUA_CHECK(!c.out_dir.empty(), "config key 'out_dir' is required");
  LINGUA_CHECK(!c.inputs.empty(), "no input files given");
  PrepareOptions o;
  o.inputs = c.inputs;
  o.out_dir = c.out_dir;
  o.source = c.source;
  o.n_chunks = c.n_chunks;
  o.val_fraction = c.val_fraction;
  o.val_docs = c.val_docs;
  o.min_doc_chars = c.min_doc_chars;
  o.seed = (uint64_t)c.seed;
  o.overwrite = c.overwrite;
  PrepareResult r = prepare_corpus(o);
  std::printf("prepared %s: %lld training documents (%lld chars) in %zu chunk(s), %lld validation documents (%lld chars)\n",
              r.source_dir.c_str(), (long long)r.train_docs, (long long)r.train_chars, r.chunk_files.size(),
              (long long)r.val_docs, (long long)r.val_chars);
  // What was left out of the documents, file by file, only where something was.
  for (const PrepareInputStats& in : r.inputs)
    if (in.skipped.skipped() || in.empty_texts || in.invalid_utf8_replaced)
      std::printf("  %s\n", in.describe().c_str());
  if (r.skipped.skipped() > 0) std::printf("skipped %s\n", r.skipped.skipped_summary().c_str());
  if (r.empty_texts > 0) std::printf("dropped %lld documents with empty text\n", (long long)r.empty_texts);
  if (r.invalid_utf8_replaced > 0)
    std::printf("replaced %lld invalid UTF-8 sequences of .txt input with U+FFFD\n", (long long)r.invalid_utf8_replaced);
  if (r.val_docs == 0)
    std::printf("no validation documents%s: lingua eval and checkpoint.eval.every need a *.val.jsonl\n",
                c.val_docs < 0 && c.val_fraction > 0 ? " (one document: kept for training)" : "");
  return 0;
}

}  // namespace lingua::app
