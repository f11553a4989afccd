#!/usr/bin/env bash
# Pre-merge benchmark (issue 13) on the GPU machine: where merged dense weights beat the factors.
#  1. one FFN layer (lingua_ffn_bench) at few tokens, each structured variant factored
#     (premerge_max_tokens=0) and merged (premerge_max_tokens=1000000), beside the dense layer;
#  2. decoding a whole model (lingua_decode_bench: prefill + per-token KV-cache decoding) of the
#     paper's Transformer-m configs, factored, merged and with the default switch point, and dense;
#     and its PyTorch anchor (bench/torch_decode.py) on the same models.
# Writes $OUT/premerge_ffn.jsonl, $OUT/premerge_decode.jsonl and a table ($OUT/premerge_table.txt),
# and appends the lines with the device and date to $RESULTS (bench/results/structured.jsonl).
#   BUILD=/tmp/bd bench/run_premerge.sh [widths=1024,2048,5120] [tokens=1,2,4,8,16,32,64,128,256]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench_out}
BUILD=${BUILD:-build-cuda}
RESULTS=${RESULTS:-bench/results/structured.jsonl}
WIDTHS=${WIDTHS:-1024,2048,5120}
TOKENS=${TOKENS:-1,2,4,8,16,32,64,128,256}
DEFAULT=${DEFAULT:-16}
mkdir -p "$OUT"
: > "$OUT/premerge_ffn.jsonl"
for pm in 0 1000000; do
  "$BUILD/lingua_ffn_bench" widths=$WIDTHS tokens=$TOKENS premerge_max_tokens=$pm iters=50 \
    >> "$OUT/premerge_ffn.jsonl" 2>> "$OUT/premerge_ffn.log" || { tail "$OUT/premerge_ffn.log"; exit 1; }
done
: > "$OUT/premerge_decode.jsonl"
for v in lowrank blockdense blockshuffle; do
  "$BUILD/lingua_decode_bench" config=configs/structured_m_$v.yaml premerge=0,1000000,$DEFAULT \
    prompts=1,8,16,32,64,128 gen=32 >> "$OUT/premerge_decode.jsonl" 2>> "$OUT/premerge_decode.log" ||
    { tail "$OUT/premerge_decode.log"; exit 1; }
done
"$BUILD/lingua_decode_bench" config=configs/structured_m_lowrank.yaml model.ffn=swiglu premerge=0 \
  prompts=1,8,16,32,64,128 gen=32 >> "$OUT/premerge_decode.jsonl" 2>> "$OUT/premerge_decode.log"
# The PyTorch anchor (bench/torch_decode.py, eager) on the same models.
(cd bench && for run in "swiglu 512 4" "lowrank 512 4" "blockdense 768 4" "blockshuffle 512 2"; do
  set -- $run
  python3 torch_decode.py --ffn $1 --rank $2 --nblocks $3 --prompts 1,8,16,32,64,128 --gen 32
done) >> "$OUT/premerge_decode.jsonl" 2>> "$OUT/premerge_decode_torch.log" || tail -5 "$OUT/premerge_decode_torch.log"
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
python3 - "$OUT" "$RESULTS" "$DEVICE" "$(date -u +%Y-%m-%d)" <<'PY' | tee "$OUT/premerge_table.txt"
import json, sys
out, results, device, date = sys.argv[1:]
ffn = [json.loads(l) for l in open(f"{out}/premerge_ffn.jsonl") if l.strip()]
dec = [json.loads(l) for l in open(f"{out}/premerge_decode.jsonl") if l.strip()]
with open(results, "a") as f:
    for r in ffn:
        f.write(json.dumps(dict(r, bench="premerge_ffn", device=device, date=date)) + "\n")
    for r in dec:
        f.write(json.dumps(dict(r, device=device, date=date)) + "\n")
dense = {(r["width"], r["tokens"]): r["forward_ms"] for r in ffn if r["variant"] == "swiglu" and r["premerge_max_tokens"] == 0}
t = {(r["variant"], r["width"], r["tokens"], r["premerge_max_tokens"] > 0): r["forward_ms"] for r in ffn}
print("One FFN layer, forward ms: factored / merged / dense (merged wins where merged < factored)")
for v in ("lowrank", "blockdense", "blockshuffle"):
    for w in sorted({r["width"] for r in ffn}):
        cells = []
        switch = 0
        for n in sorted({r["tokens"] for r in ffn}):
            a, b, d = t.get((v, w, n, False)), t.get((v, w, n, True)), dense.get((w, n))
            if a is None or b is None: continue
            if b < a: switch = n
            cells.append(f"{n}:{a:.3f}/{b:.3f}/{d:.3f}")
        print(f"{v:>12} {w:>5} merged faster up to {switch:>4} tokens | " + " ".join(cells))
print("\nDecoding Transformer-m: prefill ms by prompt length, per-token decode ms")
for r in dec:
    print(f"{r['impl']:>6} {r['ffn']:>12} premerge {r.get('premerge_max_tokens', '-'):>7} prompt {r['prompt']:>4}: prefill {r['prefill_ms']:.3f} ms, "
          f"decode {r['decode_ms_per_token']:.3f} ms/token ({r['decode_tokens_per_s']:.0f} tok/s), peak {r['peak_mem_gib']:.2f} GiB")
PY
