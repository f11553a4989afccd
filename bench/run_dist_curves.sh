#!/usr/bin/env bash
# Loss curves of the parallel layouts against one GPU, from the same init and the same global
# batch (`lingua bench bench.tokens=global`: N processes with batch_size B draw the rows one process
# with batch_size N x B draws): 1 GPU, DDP, FSDP, HSDP (2 shards), STEM tables split over all GPUs.
# Prints the largest relative difference of each from the 1-GPU curve (goal: within 1e-3) and writes
# every curve to $OUT/curves.jsonl.
#   bench/run_dist_curves.sh [config] ; NGPU (default: all), STEPS (100), B (per GPU, 2),
#   BUILD (build-cuda; must be built), STEM_CONFIG (default configs/bench_a_stem.yaml)
set -uo pipefail
cd "$(dirname "$0")/.."
CFG=${1:-configs/bench_a.yaml}
STEM_CONFIG=${STEM_CONFIG:-configs/bench_a_stem.yaml}
OUT=${OUT:-$PWD/bench_out}
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
STEPS=${STEPS:-100}
B=${B:-2}
BUILD=${BUILD:-build-cuda}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun -np $NGPU --bind-to none --oversubscribe"
mkdir -p "$OUT"
: > "$OUT/curves.jsonl"
COMMON="bench.tokens=global bench.warmup=0 bench.steps=$STEPS"
run() {  # name, config, launcher, args...
  local name=$1 cfg=$2 launch=$3; shift 3
  timeout 550 $launch "$BUILD/lingua" bench config="$cfg" dump_dir="$OUT/curve_$name" $COMMON bench.out="$OUT/curve_$name.jsonl" \
    bench.config_name="$name" "$@" > "$OUT/curve_$name.log" 2>&1 || { echo "$name failed:"; tail -5 "$OUT/curve_$name.log"; }
  tail -1 "$OUT/curve_$name.jsonl" >> "$OUT/curves.jsonl" 2>/dev/null
}
run one "$CFG" "" data.batch_size=$((B * NGPU))
run ddp "$CFG" "$MPIRUN" data.batch_size=$B
run fsdp "$CFG" "$MPIRUN" data.batch_size=$B distributed.fsdp_type=full_shard distributed.dp_shard=$NGPU
[ "$NGPU" -ge 4 ] && run hsdp "$CFG" "$MPIRUN" data.batch_size=$B distributed.fsdp_type=full_shard distributed.dp_shard=2
run stem_one "$STEM_CONFIG" "" data.batch_size=$((B * NGPU))
run stem_split "$STEM_CONFIG" "$MPIRUN" data.batch_size=$B distributed.stem_parallel_size=$NGPU
python3 - "$OUT/curves.jsonl" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    j = json.loads(line)
    runs[j["config"]] = j
def cmp(name, ref):
    if name not in runs or ref not in runs:
        print(f"{name:12s} missing"); return
    a, b = runs[name]["losses"], runs[ref]["losses"]
    rel = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    print(f"{name:12s} vs {ref:9s}: {len(a)} steps, max relative difference {rel:.2e} "
          f"({'within' if rel <= 1e-3 else 'OUTSIDE'} 1e-3), last loss {a[-1]:.4f} vs {b[-1]:.4f}, "
          f"{runs[name]['tokens_per_s']:.0f} tok/s")
for n in ["ddp", "fsdp", "hsdp"]:
    cmp(n, "one")
cmp("stem_split", "stem_one")
PY
