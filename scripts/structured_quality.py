#!/usr/bin/env python3
"""The structured-FFN quality check at small scale (issue 13): dense vs LowRank vs LowRank with
self-guided training, each trained on the bundled corpus (Moby Dick, byte-level, the demo model)
for the same training FLOPs, compared by validation loss.

    python3 scripts/structured_quality.py [--lingua build/lingua] [--steps 500] [--rank 128]
        [--guided-ratio 0.5] [--device cpu] [--out build/quality] [--results bench/results/structured.jsonl]
        [--extra "model.dim=512 model.n_layers=16"]

The dense run takes --steps steps; each other run takes as many steps as fit in the dense run's
FLOPs, from the FLOPs per token the trainer logs (speed/FLOPS / speed/wps: factors only for
LowRank; factors + guides while they run). Every run keeps the demo config otherwise (its own
cosine schedule over its own steps), with --extra's keys over it (a larger model, say). Prints a table and appends one JSON line per run.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(lingua, out, name, steps, extra, data_dir, device, eval_every):
    dump = os.path.join(out, name)
    shutil.rmtree(dump, ignore_errors=True)
    cmd = [lingua, "train", "config=configs/demo.yaml", f"dump_dir={dump}", f"data.root_dir={data_dir}",
           f"steps={steps}", f"device={device}", "logging.freq=1", f"checkpoint.eval.every={eval_every}",
           f"checkpoint.dump.every={steps}"] + extra
    with open(os.path.join(out, name + ".log"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    metrics = [json.loads(l) for l in open(os.path.join(dump, "metrics.jsonl")) if l.strip()]
    evals = [json.loads(l) for l in open(os.path.join(dump, "metrics.eval.jsonl")) if l.strip()] \
        if os.path.exists(os.path.join(dump, "metrics.eval.jsonl")) else []
    return metrics, evals


def flops_per_token(m):
    return m["speed/FLOPS"] / m["speed/wps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lingua", default="build/lingua")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--guided-ratio", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="build/quality")
    ap.add_argument("--results", default="bench/results/structured.jsonl")
    ap.add_argument("--extra", default="", help="key=value settings over configs/demo.yaml for every run")
    a = ap.parse_args()
    common = a.extra.split()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    data_dir = os.path.join(out, "data")
    subprocess.run([a.lingua, "prepare", f"out_dir={data_dir}", "source=moby_dick", "val_fraction=0.02",
                    "overwrite=true", "data/demo/moby_dick.txt.gz"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lowrank = common + ["model.ffn=lowrank", f"model.structured.rank={a.rank}"]
    guided = lowrank + ["model.structured.self_guided.mode=fixedstep", "model.structured.self_guided.max_step=2"]
    # FLOPs per token of each kind of step, from 3-step probes.
    probe = {}
    for name, extra in (("dense", common), ("lowrank", lowrank), ("guided", guided)):
        m, _ = train(a.lingua, out, "probe_" + name, 3, extra, data_dir, a.device, 0)
        probe[name] = [flops_per_token(r) for r in m]
    f_dense, f_lowrank = probe["dense"][0], probe["lowrank"][0]
    f_guided = probe["guided"][0]  # steps 1-2 guided, step 3 not
    budget = a.steps * f_dense
    s_lowrank = round(budget / f_lowrank)
    # S f_lowrank + ratio S (f_guided - f_lowrank) = budget
    s_guided = round(budget / (f_lowrank + a.guided_ratio * (f_guided - f_lowrank)))
    runs = [("dense", a.steps, common), ("lowrank", s_lowrank, lowrank),
            ("lowrank_self_guided", s_guided,
             lowrank + ["model.structured.self_guided.mode=fixedstep",
                        f"model.structured.self_guided.max_step={round(a.guided_ratio * s_guided)}"])]
    device_name = a.device
    date = datetime.date.today().isoformat()
    rows = []
    for name, steps, extra in runs:
        m, ev = train(a.lingua, out, name, steps, extra, data_dir, a.device, steps)
        flops = sum(flops_per_token(r) * r["speed/wps"] * r["speed/curr_iter_time"] for r in m)
        val = ev[-1]["moby_dick/nll_per_token"]
        rows.append({"bench": "quality", "run": name, "steps": steps, "train_flops": flops,
                     "flops_vs_dense": None, "val_nll_per_byte": val, "train_loss_last": m[-1]["loss/out"],
                     "config": "configs/demo.yaml " + " ".join(extra), "rank": a.rank,
                     "guided_ratio": a.guided_ratio if "guided" in name else 0, "device": device_name, "date": date})
    for r in rows:
        r["flops_vs_dense"] = r["train_flops"] / rows[0]["train_flops"]
    print(f"{'run':>22} {'steps':>6} {'train FLOPs':>12} {'vs dense':>8} {'val nll/byte':>12}")
    for r in rows:
        print(f"{r['run']:>22} {r['steps']:>6} {r['train_flops']:>12.3e} {r['flops_vs_dense']:>8.3f} "
              f"{r['val_nll_per_byte']:>12.4f}")
    with open(os.path.join(ROOT, a.results), "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
