#!/usr/bin/env bash
# make demo: prepare the bundled corpus (read gzip-compressed), train the demo model, print samples.
set -euo pipefail
LINGUA=${1:-build/lingua}
OUT=${DEMO_DIR:-build/demo}
cd "$(dirname "$0")/.."
start=$(date +%s)

"$LINGUA" prepare out_dir="$OUT/data" source=moby_dick val_fraction=0.02 overwrite=true data/demo/moby_dick.txt.gz

# A fresh run each time (a kept dump_dir would resume instead).
rm -rf "$OUT/run"
"$LINGUA" train config=configs/demo.yaml dump_dir="$OUT/run" data.root_dir="$OUT/data" "${@:2}" 2>&1 | tee "$OUT/train.log"

loss_summary() {
  # first and last training loss from metrics.jsonl, without Python
  local first last
  first=$(head -n 1 "$OUT/run/metrics.jsonl" | sed 's/.*"loss\/out":\([0-9.eE+-]*\).*/\1/')
  last=$(tail -n 1 "$OUT/run/metrics.jsonl" | sed 's/.*"loss\/out":\([0-9.eE+-]*\).*/\1/')
  echo
  echo "training loss: first step $first -> last step $last (nats/byte)"
  grep -o "unigram entropy.*" "$OUT/train.log" || true
}
loss_summary

echo
echo "=== task: complete held-out sentences (true end vs 3 reorderings of its words; chance 25%)"
"$LINGUA" eval ckpt="$OUT/run" validation=false

echo
echo "=== samples from $OUT/run (temperature 0.8, top-p 0.95)"
"$LINGUA" generate ckpt="$OUT/run" temperature=0.8 top_p=0.95 max_gen_len=200 seed=1 \
  prompts='["Call me Ishmael. ", "The whale ", "Captain Ahab said, \"", "It was a dark night, and the sea "]'
echo
echo "demo finished in $(( $(date +%s) - start )) s"
