#!/usr/bin/env bash
# Multi-GPU: builds lingua on the GPU machine, runs the multi-process tests on NCCL, then benchmarks
# lingua's DDP and FSDP against the PyTorch anchor's under torchrun (weak scaling: batch_size
# sequences per GPU), in the same call, and prints per-GPU efficiency and the ratios.
# MODES: lingua's modes (default "ddp fsdp"; also ddp_bf16 (bf16 gradient all-reduce), hsdp (shard
# groups of 2) and tables (STEM tables split over every GPU: give a STEM config)).
#   bench/run_dist.sh [path/to/torch_llama_bench.py] [configs...]
# NGPU: GPUs to use (default: all). DIST_ANCHOR: the anchor's modes (default "ddp fsdp"; "" skips
# the anchor). ONE_GPU=0 skips the 1-GPU runs (efficiency needs them). SKIP_TESTS=1 skips the tests.
# BUILD: build directory (default build-cuda). Logs go to $OUT; results are appended to $RESULTS
# (bench/results/dist.jsonl).
set -uo pipefail
cd "$(dirname "$0")/.."
ANCHOR=${1:-.anchors/torch_llama_bench.py}
shift || true
CONFIGS=${*:-configs/bench_a.yaml configs/bench_b.yaml}
OUT=${OUT:-$PWD/bench_out}
mkdir -p "$OUT" bench/results
RESULTS=${RESULTS:-bench/results/dist.jsonl}
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
DIST_ANCHOR=${DIST_ANCHOR-ddp fsdp}
MODES=${MODES:-ddp fsdp}
BUILD=${BUILD:-build-cuda}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun -np $NGPU --bind-to none --oversubscribe"

echo "== build" | tee "$OUT/summary.txt"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLINGUA_FUZZ_TESTS=OFF > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }

if [ -z "${SKIP_TESTS:-}" ]; then
  echo "== multi-process tests on $NGPU GPUs" | tee -a "$OUT/summary.txt"
  for t in "$BUILD"/lingua_dist_test_mpi_* "$BUILD"/tests_test_mpi_*; do
    if $MPIRUN "$t" > "$OUT/$(basename "$t").log" 2>&1; then echo "ok   $(basename "$t")"; else echo "FAIL $(basename "$t")"; grep -E "Failure|error" -A3 "$OUT/$(basename "$t").log" | head -20; fi
  done | tee -a "$OUT/summary.txt"
fi

DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
DATE=$(date -u +%Y-%m-%d)
for cfg in $CONFIGS; do
  name=$(basename "$cfg" .yaml)
  echo "== bench $name" | tee -a "$OUT/summary.txt"
  if [ "${ONE_GPU:-1}" != 0 ]; then
    timeout 200 "$BUILD/lingua" bench config="$cfg" dump_dir="$OUT/$name.1" > "$OUT/$name.lingua1.json" 2> "$OUT/$name.lingua1.log"
    tail -1 "$OUT/$name.lingua1.log" | tee -a "$OUT/summary.txt"
  fi
  for mode in $MODES; do
    case "$mode" in  # (tables needs a STEM config, e.g. configs/bench_a_stem.yaml)
      ddp) extra="" ;;
      ddp_bf16) extra="distributed.reduce_dtype=bf16" ;;
      fsdp) extra="distributed.fsdp_type=full_shard distributed.dp_shard=$NGPU" ;;
      hsdp) extra="distributed.fsdp_type=full_shard distributed.dp_shard=2" ;;
      tables) extra="distributed.stem_parallel_size=$NGPU" ;;
      *) echo "unknown mode $mode"; continue ;;
    esac
    timeout 300 $MPIRUN "$BUILD/lingua" bench config="$cfg" dump_dir="$OUT/$name.$mode" $extra > "$OUT/$name.lingua_$mode.json" 2> "$OUT/$name.lingua_$mode.log"
    tail -1 "$OUT/$name.lingua_$mode.log" | tee -a "$OUT/summary.txt"
  done
  args=$(python3 bench/anchor_args.py "$cfg")
  for mode in $DIST_ANCHOR; do
    [ -f "$ANCHOR" ] || break
    timeout 300 torchrun --nproc-per-node "$NGPU" "$ANCHOR" $args --compile --dist "$mode" > "$OUT/$name.torch_$mode.json" 2> "$OUT/$name.torch_$mode.log"
  done
  python3 - "$OUT" "$name" "$DEVICE" "$DATE" "$RESULTS" "$NGPU" "$DIST_ANCHOR" "$MODES" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
out, name, device, date, results, ngpu, anchor_modes, modes = sys.argv[1:9]
def last(path):
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except Exception:
        return None
one = last(f"{out}/{name}.lingua1.json")
torch = {}
for mode in anchor_modes.split():
    t = last(f"{out}/{name}.torch_{mode}.json")
    if t:
        t.update(device=device, date=date, config=name)
        with open(results, 'a') as f: f.write(json.dumps(t) + '\n')
        torch[mode] = t
line = f"{name}: lingua 1 GPU {one['tokens_per_s']:.0f} tok/s, {one['peak_mem_gib']:.1f} GiB" if one else f"{name}: lingua 1 GPU failed"
for mode in modes.split():
    many = last(f"{out}/{name}.lingua_{mode}.json")
    if many is None:
        line += f" | lingua {mode} x{ngpu} failed (see {name}.lingua_{mode}.log)"; continue
    eff = many['tokens_per_s'] / (int(ngpu) * one['tokens_per_s']) if one else None
    rec = dict(many, device=device, date=date, parallel=mode, per_gpu_efficiency=eff,
               one_gpu_tokens_per_s=one['tokens_per_s'] if one else None)
    line += f" | {mode.upper()} x{ngpu} {many['tokens_per_s']:.0f} tok/s, {many['peak_mem_gib']:.1f} GiB/GPU"
    line += f", efficiency {100 * eff:.1f}%" if eff else ""
    if mode in torch:
        t = torch[mode]
        rec[f"torch_{mode}_tokens_per_s"] = t['tokens_per_s']
        rec[f"torch_{mode}_peak_mem_gib"] = t['peak_mem_gib']
        rec["ratio_vs_torch"] = many['tokens_per_s'] / t['tokens_per_s']
        line += f" (torch {t['tokens_per_s']:.0f}, {t['peak_mem_gib']:.1f} GiB -> {rec['ratio_vs_torch']:.2f}x)"
    with open(results, 'a') as f: f.write(json.dumps(rec) + '\n')
for mode in anchor_modes.split():
    if mode not in torch: line += f" | torch {mode}: failed"
print(line)
PY
done
# What comes back from the device is limited in files: the logs go in one archive.
cp "$RESULTS" "$OUT/" 2>/dev/null || true
(cd "$OUT" && tar czf logs.tgz --exclude logs.tgz --exclude summary.txt --exclude "$(basename "$RESULTS")" . &&
  find . -maxdepth 1 -type f ! -name logs.tgz ! -name summary.txt ! -name "$(basename "$RESULTS")" -delete)
echo "== summary"; cat "$OUT/summary.txt"
