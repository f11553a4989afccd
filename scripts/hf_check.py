#!/usr/bin/env python3
"""Checks a `lingua export-hf` directory with Hugging Face transformers (on the GPU machine, where
transformers is installed):

  1. AutoModelForCausalLM.from_pretrained(dir) (trust_remote_code for STEM) gives lingua's logits
     on the ids of lingua_reference.safetensors (export with reference_text=...);
  2. AutoTokenizer.from_pretrained(dir) encodes the reference text (lingua_export.json) to the
     same ids, BOS included;
  3. with --task FILE --lingua-table FILE: acc and acc_norm of a zero-shot multiple-choice task,
     computed here with the HF model and tokenizer the way lingua's task evaluation does
     (lingua/eval/tasks.h: lm-eval's loglikelihood tokenisation, acc_norm by characters), equal
     the values in the table `lingua eval ... tasks=...` printed.

Prints one JSON line of results; exits 1 when a check fails.
  python3 scripts/hf_check.py DIR [--task T.jsonl --lingua-table eval.txt] [--device cuda]
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def loglikelihood(model, tok, context, continuation, max_len, device):
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        continuation = context[len(context) - spaces:] + continuation
        context = context[: len(context) - spaces]
    ctx = tok(context).input_ids
    whole = tok(context + continuation).input_ids
    cont = whole[min(len(ctx), len(whole)):]
    ids = (ctx + cont)[-(max_len + 1):]
    x = torch.tensor([ids[:-1]], device=device)
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits.float()[0], dim=-1)
    targets = ids[len(ids) - len(cont):]
    rows = range(len(ids) - 1 - len(cont), len(ids) - 1)
    return sum(logp[r, t].item() for r, t in zip(rows, targets))


def lingua_table(path, task):
    values = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 3 and parts[0] == task and parts[1] in ("acc", "acc_norm"):
            values[parts[1]] = float(parts[2])
    return values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--task")
    ap.add_argument("--lingua-table")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tol", type=float, default=2e-3)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = {"dir": a.dir, "ok": True}
    try:  # (transformers >= 4.56 names it dtype; older ones torch_dtype)
        model = AutoModelForCausalLM.from_pretrained(a.dir, trust_remote_code=True, dtype=torch.float32)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(a.dir, trust_remote_code=True, torch_dtype=torch.float32)
    model = model.to(a.device).eval()
    out["model_class"] = type(model).__name__
    ref_path = os.path.join(a.dir, "lingua_reference.safetensors")
    if os.path.exists(ref_path):
        ref = load_file(ref_path)
        ids = ref["input_ids"].long().to(a.device)
        with torch.no_grad():
            logits = model(ids).logits.float()[0].cpu()
        diff = (logits - ref["logits"]).abs().max().item()
        out["logits_max_abs_diff"] = diff
        out["logits_max_abs"] = ref["logits"].abs().max().item()
        out["logits_ok"] = diff < a.tol
        out["ok"] &= out["logits_ok"]
        text = json.load(open(os.path.join(a.dir, "lingua_export.json"))).get("reference_text")
        if text is not None:
            tok = AutoTokenizer.from_pretrained(a.dir, trust_remote_code=True)
            hf_ids = tok(text).input_ids
            out["tokenizer_ok"] = hf_ids == ref["input_ids"][0].tolist()
            if not out["tokenizer_ok"]:
                out["tokenizer_hf_ids"] = hf_ids[:40]
                out["tokenizer_lingua_ids"] = ref["input_ids"][0].tolist()[:40]
            out["ok"] &= out["tokenizer_ok"]
    if a.task:
        tok = AutoTokenizer.from_pretrained(a.dir, trust_remote_code=True)
        max_len = model.config.max_position_embeddings
        name = os.path.basename(a.task)[: -len(".jsonl")] if a.task.endswith(".jsonl") else os.path.basename(a.task)
        acc = acc_norm = n = 0
        for line in open(a.task):
            try:
                e = json.loads(line)
                choices, gold = e["choices"], int(e["gold"])
            except (ValueError, KeyError, TypeError):
                continue
            ll = [loglikelihood(model, tok, e["context"], " " + c, max_len, a.device) for c in choices]
            norm = [l / max(1, len(c)) for l, c in zip(ll, choices)]
            acc += max(range(len(ll)), key=lambda i: (ll[i], -i)) == gold
            acc_norm += max(range(len(norm)), key=lambda i: (norm[i], -i)) == gold
            n += 1
            if a.limit and n >= a.limit:
                break
        out["task"] = {"name": name, "examples": n, "acc": acc / n, "acc_norm": acc_norm / n}
        if a.lingua_table:
            ours = lingua_table(a.lingua_table, name)
            out["task"]["lingua"] = ours
            same = all(abs(ours.get(k, math.nan) - out["task"][k]) < 5e-5 for k in ("acc", "acc_norm"))
            out["task"]["ok"] = same
            out["ok"] &= same
    print(json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
