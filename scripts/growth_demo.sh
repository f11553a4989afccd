#!/usr/bin/env bash
# Model growth, demonstrated (README "Model growth"): the same target model trained from scratch
# and grown in one run from a model of a quarter of its depth (G_stack, g = 4, and G_zero), with the
# same total steps and tokens; validation loss against training FLOPs for each (a chart, lingua plot
# x=flops) and the FLOPs each grown run needed to reach the scratch run's final validation loss.
#   scripts/growth_demo.sh [path/to/lingua] [extra train keys ...]
# STEPS, GROW_AT (the growth step), LAYERS (the target's depth, a multiple of 4), EVAL_EVERY,
# DEVICE (cpu | cuda | auto), OPS (space-separated: stack zero random) and DEMO_DIR change the run.
set -euo pipefail
LINGUA=${1:-build/lingua}
OUT=${DEMO_DIR:-build/growth_demo}
cd "$(dirname "$0")/.."
STEPS=${STEPS:-600}
GROW_AT=${GROW_AT:-150}
LAYERS=${LAYERS:-8}
EVAL_EVERY=${EVAL_EVERY:-25}
DEVICE=${DEVICE:-auto}
OPS=${OPS:-stack zero}
SRC=$((LAYERS / 4))
mkdir -p "$OUT"
"$LINGUA" prepare out_dir="$OUT/data" source=moby_dick val_fraction=0.02 overwrite=true data/demo/moby_dick.txt.gz
COMMON=(config=configs/demo.yaml data.root_dir="$OUT/data" device="$DEVICE" model.n_layers="$LAYERS" steps="$STEPS"
        checkpoint.eval.every="$EVAL_EVERY" eval.tasks=[] eval.max_tokens=65536 logging.freq=5
        logging.unigram_baseline_tokens=0 checkpoint.dump.every="$GROW_AT" checkpoint.dump.keep=2 "${@:2}")
rm -rf "$OUT/scratch" "$OUT"/grown_*
echo "=== scratch: $LAYERS layers, $STEPS steps"
"$LINGUA" train "${COMMON[@]}" dump_dir="$OUT/scratch" 2>&1 | grep -E "params|done at" | tail -2
RUNS=("$OUT/scratch")
for op in $OPS; do
  # G_zero, G_random: each source layer followed by three new layers (identity, or random ramped in).
  list=""
  if [ "$op" = zero ] || [ "$op" = random ]; then
    list=$(python3 -c "print('[' + ', '.join(str(i // 4) if i % 4 == 0 else '-1' for i in range($LAYERS)) + ']')")
  fi
  echo "=== G_$op: $SRC layers for steps 1-$GROW_AT, then $LAYERS layers ${list:+(stacking list $list)}"
  "$LINGUA" train "${COMMON[@]}" dump_dir="$OUT/grown_$op" growth.step="$GROW_AT" growth.source.n_layers="$SRC" \
    growth.op="$op" ${list:+growth.stacking_list="$list"} 2>&1 | grep -E "growth: G_|done at" | tail -2
  RUNS+=("$OUT/grown_$op")
done
dirs=$(IFS=,; echo "${RUNS[*]}")
"$LINGUA" plot dump_dirs="[$dirs]" x=flops out="$OUT/growth.html" title="scratch vs grown ($LAYERS layers)" \
  keys='["eval: moby_dick/nll_per_token", loss/out]' || echo "(no chart: lingua plot failed)"
if command -v chromium > /dev/null; then
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,400 \
    --screenshot="$OUT/growth.png" "file://$(realpath "$OUT/growth.html")" > /dev/null 2>&1 || true
fi
echo
echo "=== validation loss (nats/token, moby_dick held out) against training FLOPs"
python3 - "${RUNS[@]}" <<'PY'
import json, sys
def evals(d):
    flops = {}
    for l in open(d + "/metrics.jsonl"):
        j = json.loads(l); flops[j["global_step"]] = j["optim/total_flops"]
    pts = []
    for l in open(d + "/metrics.eval.jsonl"):
        j = json.loads(l)
        if j["global_step"] in flops: pts.append((flops[j["global_step"]], j["moby_dick/nll_per_token"], j["global_step"]))
    return sorted(pts)
runs = {d.rstrip("/").split("/")[-1]: evals(d) for d in sys.argv[1:]}
scratch = runs["scratch"]
goal_flops, goal = scratch[-1][0], scratch[-1][1]
print("%-12s %12s %14s %22s %12s" % ("run", "final loss", "total FLOPs", "FLOPs to reach %.4f" % goal, "saved"))
for name, pts in runs.items():
    reach = None
    for (f0, l0, _), (f1, l1, _) in zip([(0, float("inf"), 0)] + pts, pts):
        if l1 <= goal:  # linear between the evaluations either side
            reach = f1 if l0 == float("inf") else f0 + (f1 - f0) * (l0 - goal) / (l0 - l1)
            break
    saved = "%.1f%%" % (100 * (1 - reach / goal_flops)) if reach else "not reached"
    print("%-12s %12.4f %14.4g %22s %12s" % (name, pts[-1][1], pts[-1][0], "%.4g" % reach if reach else "-", saved))
PY
echo "chart: $OUT/growth.html${OUT:+ (and growth.png when chromium is installed)}"
