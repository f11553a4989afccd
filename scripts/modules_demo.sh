#!/usr/bin/env bash
# Module tokens, demonstrated (README "Module tokens"): a base model on Moby Dick, then a module
# trained on a second domain, C++ (this repository's own sources, prepared with `lingua prepare`),
# on the frozen base; validation loss of both domains with the module on and off; and the step
# time of module training against full training of the same model.
#   scripts/modules_demo.sh [path/to/lingua] [extra train keys ...]
# BASE_STEPS, MODULE_STEPS, TIME_STEPS, DEVICE (cpu | cuda | auto) and MODULE_ROWS change the run.
set -euo pipefail
LINGUA=${1:-build/lingua}
OUT=${DEMO_DIR:-build/modules_demo}
cd "$(dirname "$0")/.."
BASE_STEPS=${BASE_STEPS:-400}
MODULE_STEPS=${MODULE_STEPS:-200}
TIME_STEPS=${TIME_STEPS:-60}
DEVICE=${DEVICE:-auto}
ROWS=${MODULE_ROWS:-16}
mkdir -p "$OUT"
"$LINGUA" prepare out_dir="$OUT/data" source=moby_dick val_fraction=0.02 overwrite=true data/demo/moby_dick.txt.gz
# C++: one document per source file of lingua/ and apps/ (as JSONL, which `lingua prepare` reads).
find lingua apps \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' \) | sort | python3 -c '
import json, sys
for path in sys.stdin.read().split():
    print(json.dumps({"text": open(path, encoding="utf-8").read()}))' > "$OUT/code.jsonl"
"$LINGUA" prepare out_dir="$OUT/data" source=code val_fraction=0.05 overwrite=true "$OUT/code.jsonl"
COMMON=(config=configs/demo.yaml data.root_dir="$OUT/data" device="$DEVICE" checkpoint.eval.every=0 eval.tasks=[]
        logging.unigram_baseline_tokens=0 "${@:2}")
rm -rf "$OUT/base" "$OUT/code" "$OUT/full"
"$LINGUA" train "${COMMON[@]}" dump_dir="$OUT/base" steps="$BASE_STEPS" checkpoint.dump.every="$BASE_STEPS" \
  2>&1 | tail -3
"$LINGUA" train "${COMMON[@]}" dump_dir="$OUT/code" steps="$MODULE_STEPS" checkpoint.dump.every="$MODULE_STEPS" \
  'data.sources={code: 1.0}' checkpoint.init_ckpt_path="$OUT/base" model.module_seq_len="$ROWS" \
  model.create_module_name=code 2>&1 | grep -E "module tokens|params|step +$MODULE_STEPS" | tail -3

# Median step time (s) of a run's logged steps after the first few (metrics.jsonl).
step_time() {
  python3 -c 'import json,sys,statistics; t=[json.loads(l)["speed/curr_iter_time"] for l in open(sys.argv[1])][3:]; print("%.4f" % statistics.median(t))' "$1/metrics.jsonl"
}
echo
echo "=== validation loss (nats/token on held-out documents), the base model and module 'code' on and off"
printf "%-10s %-12s %-16s %-16s\n" source base "code, off" "code, on"
for src in moby_dick code; do
  row=()
  for run in "base" "code modules=[]" "code modules=code"; do
    set -- $run
    row+=("$("$LINGUA" eval ckpt="$OUT/$1" "${@:2}" device="$DEVICE" root_dir="$OUT/data" sources="$src" \
             validation=true max_tokens=65536 2>/dev/null | sed -n "s/^$src: nll_per_token \([0-9.]*\).*/\1/p")")
  done
  printf "%-10s %-12s %-16s %-16s\n" "$src" "${row[@]}"
done

echo
echo "=== step time: the module on the frozen base vs training every weight of the same model"
"$LINGUA" train "${COMMON[@]}" dump_dir="$OUT/full" steps="$TIME_STEPS" checkpoint.dump.every=0 logging.freq=1 \
  'data.sources={code: 1.0}' model.module_seq_len="$ROWS" 'model.modules=[code]' > "$OUT/full.log" 2>&1
rm -rf "$OUT/code_time"
"$LINGUA" train "${COMMON[@]}" dump_dir="$OUT/code_time" steps="$TIME_STEPS" checkpoint.dump.every=0 logging.freq=1 \
  'data.sources={code: 1.0}' checkpoint.init_ckpt_path="$OUT/base" model.module_seq_len="$ROWS" \
  model.create_module_name=code > "$OUT/code_time.log" 2>&1
full=$(step_time "$OUT/full"); mod=$(step_time "$OUT/code_time")
echo "full training: $full s/step; module on the frozen base: $mod s/step; saving $(python3 -c "print('%.1f%%' % (100 * (1 - $mod / $full)))")"
