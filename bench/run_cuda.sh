#!/usr/bin/env bash
# Builds lingua on the GPU machine, runs the GPU tests, then benchmarks configs A and B against the
# PyTorch anchor (torch.compile) in the same call and prints the ratios.
#   bench/run_cuda.sh [path/to/torch_llama_bench.py] [configs...]
# Logs and results go to $OUT (or ./bench_out); results are appended to $RESULTS
# (bench/results/cuda.jsonl by default). A config with model.ffn=stem runs the anchor with
# --stem half (stem_layers 0, 2, 4, ...) or --stem all; other STEM layouts run without the anchor.
# SKIP_TESTS=1 skips the test suite. BUILD names the build directory (default build-cuda).
# BASE_LINGUA=path/to/an/older/lingua also benchmarks that binary on each config, just before this
# one, and prints the ratio (a change's before and after in one call).
set -uo pipefail
cd "$(dirname "$0")/.."
ANCHOR=${1:-.anchors/torch_llama_bench.py}
shift || true
CONFIGS=${*:-configs/bench_a.yaml configs/bench_b.yaml}
OUT=${OUT:-$PWD/bench_out}
mkdir -p "$OUT" bench/results
JOBS=$(nproc)
RESULTS=${RESULTS:-bench/results/cuda.jsonl}

echo "== build" | tee "$OUT/summary.txt"
BUILD=${BUILD:-build-cuda}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD" -j "$JOBS" > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }

if [ -z "${SKIP_TESTS:-}" ]; then
  echo "== tests" | tee -a "$OUT/summary.txt"
  (cd "$BUILD" && ctest --output-on-failure -j 8 --timeout 600 > "$OUT/ctest.log" 2>&1)
  tail -5 "$OUT/ctest.log" | tee -a "$OUT/summary.txt"
  grep -E "Failed|\*\*\*" "$OUT/ctest.log" | head -20 | tee -a "$OUT/summary.txt"
fi

DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
DATE=$(date -u +%Y-%m-%d)
for cfg in $CONFIGS; do
  name=$(basename "$cfg" .yaml)
  echo "== bench $name" | tee -a "$OUT/summary.txt"
  if [ -n "${BASE_LINGUA:-}" ]; then
    timeout 200 "$BASE_LINGUA" bench config="$cfg" dump_dir="$OUT/$name.base" ${BENCH_ARGS:-} > "$OUT/$name.base.json" 2> "$OUT/$name.base.log"
    tail -1 "$OUT/$name.base.log" | sed 's/^/before: /' | tee -a "$OUT/summary.txt"
  fi
  timeout 200 "$BUILD/lingua" bench config="$cfg" bench.out="$RESULTS" dump_dir="$OUT/$name" ${BENCH_ARGS:-} > "$OUT/$name.lingua.json" 2> "$OUT/$name.lingua.log"
  tail -1 "$OUT/$name.lingua.log" | tee -a "$OUT/summary.txt"
  if [ -n "${BASE_LINGUA:-}" ]; then
    python3 - "$OUT/$name.base.json" "$OUT/$name.lingua.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
b = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
n = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print(f"after/before: {n['tokens_per_s']/b['tokens_per_s']:.3f}x tokens/s, peak {n['peak_mem_gib']:.2f} vs {b['peak_mem_gib']:.2f} GiB")
PY
  fi
  if [ -f "$ANCHOR" ]; then
    args=$(python3 bench/anchor_args.py "$cfg")
    case "$args" in *SKIP) echo "no anchor for this STEM layout" | tee -a "$OUT/summary.txt"; continue;; esac
    # The same shapes as the previous config (e.g. a dense and a sparse STEM optimizer): one anchor run.
    reused=0
    if [ "$args" = "${prev_args:-}" ]; then
      cp "$OUT/$prev_name.torch.json" "$OUT/$name.torch.json"
      reused=1
    else
      timeout 300 python3 "$ANCHOR" $args --compile > "$OUT/$name.torch.json" 2> "$OUT/$name.torch.log"
    fi
    prev_args=$args
    prev_name=$name
    python3 - "$OUT/$name.torch.json" "$OUT/$name.lingua.json" "$DEVICE" "$DATE" "$name" "$RESULTS" "$reused" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
t = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
l = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
t.update(device=sys.argv[3], date=sys.argv[4], config=l.get('config', sys.argv[5]))
if sys.argv[7] == '0':  # a reused anchor run is recorded once
    with open(sys.argv[6], 'a') as f: f.write(json.dumps(t) + '\n')
print(f"{sys.argv[5]}: lingua {l['tokens_per_s']:.0f} tok/s ({100*l['mfu']:.1f}% MFU, {l['peak_mem_gib']:.1f} GiB) | "
      f"torch+compile {t['tokens_per_s']:.0f} tok/s ({100*t['mfu']:.1f}% MFU, {t['peak_mem_gib']:.1f} GiB) | "
      f"ratio {l['tokens_per_s']/t['tokens_per_s']:.2f}x")
PY
  fi
done
cp "$RESULTS" "$OUT/" 2>/dev/null || true
echo "== summary"; cat "$OUT/summary.txt"
