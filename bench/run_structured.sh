#!/usr/bin/env bash
# Structured FFN layer benchmark (issue 13) on the GPU machine: lingua_ffn_bench and its PyTorch
# anchor (bench/torch_structured_ffn.py, torch.compile) in the same call, on the same shapes.
# Writes $OUT/ffn_lingua.jsonl, $OUT/ffn_torch.jsonl and a table ($OUT/ffn_table.txt: each
# structured layer's speed-up over our dense layer and over PyTorch's version of itself), and
# appends the joined lines, with the device and date, to $RESULTS (bench/results/structured.jsonl).
#   BUILD=/tmp/bd bench/run_structured.sh [lingua_ffn_bench args...]
# ANCHOR_ARGS passes extra arguments to the anchor (e.g. --no-compile).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench_out}
BUILD=${BUILD:-build-cuda}
RESULTS=${RESULTS:-bench/results/structured.jsonl}
mkdir -p "$OUT" "$(dirname "$RESULTS")"
if [ ! -x "$BUILD/lingua_ffn_bench" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target lingua_ffn_bench > "$OUT/build.log" 2>&1 || { grep error "$OUT/build.log" | head; exit 1; }
fi
# The same shapes for both: key=value for lingua, --key value for the anchor.
ARGS=("$@")
TORCH_ARGS=()
for a in "${ARGS[@]}"; do TORCH_ARGS+=("--${a%%=*}" "${a#*=}"); done
TORCH_ARGS=("${TORCH_ARGS[@]//_/-}")
"$BUILD/lingua_ffn_bench" "${ARGS[@]}" > "$OUT/ffn_lingua.jsonl" 2> "$OUT/ffn_lingua.log" || { tail "$OUT/ffn_lingua.log"; exit 1; }
# ANCHOR_TIMEOUT (seconds) bounds the anchor (torch.compile per shape); what it finished is compared.
timeout "${ANCHOR_TIMEOUT:-3600}" python3 bench/torch_structured_ffn.py "${TORCH_ARGS[@]}" ${ANCHOR_ARGS:-} \
  > "$OUT/ffn_torch.jsonl" 2> "$OUT/ffn_torch.log" || { echo "anchor stopped early:"; tail -3 "$OUT/ffn_torch.log"; }
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
python3 - "$OUT/ffn_lingua.jsonl" "$OUT/ffn_torch.jsonl" "$RESULTS" "$DEVICE" "$(date -u +%Y-%m-%d)" <<'PY' | tee "$OUT/ffn_table.txt"
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
theirs = {(r["variant"], r["width"], r["tokens"]): r for r in map(json.loads, filter(str.strip, open(sys.argv[2])))}
dense = {(r["width"], r["tokens"]): r for r in ours if r["variant"] == "swiglu"}
print(f"{'variant':>12} {'width':>5} {'tokens':>6} {'params':>6} | {'fwd ms':>8} {'train ms':>8} | "
      f"{'vs dense fwd':>12} {'train':>6} | {'vs torch fwd':>12} {'train':>6}")
with open(sys.argv[3], "a") as out:
    for r in ours:
        key = (r["variant"], r["width"], r["tokens"])
        t, d = theirs.get(key), dense.get((r["width"], r["tokens"]))
        row = dict(r, device=sys.argv[4], date=sys.argv[5])
        if t:
            row["torch_forward_ms"], row["torch_train_ms"], row["torch_impl"] = t["forward_ms"], t["train_ms"], t["impl"]
        if d:
            row["dense_forward_ms"], row["dense_train_ms"] = d["forward_ms"], d["train_ms"]
        out.write(json.dumps(row) + "\n")
        share = r["params"] / d["params"] if d else float("nan")
        f = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
        print(f"{r['variant']:>12} {r['width']:>5} {r['tokens']:>6} {share:>6.2f} | {r['forward_ms']:>8.3f} "
              f"{r['train_ms']:>8.3f} | {f(d and d['forward_ms'], r['forward_ms']):>12} "
              f"{f(d and d['train_ms'], r['train_ms']):>6} | {f(t and t['forward_ms'], r['forward_ms']):>12} "
              f"{f(t and t['train_ms'], r['train_ms']):>6}")
PY
