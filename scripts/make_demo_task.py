#!/usr/bin/env python3
"""Writes data/demo/moby_sentence_end.jsonl, the multiple-choice task `make demo` scores: from the
validation documents of the bundled corpus (held out of the demo's training by `lingua prepare
val_fraction=0.02`, which splits the same way every time), each example's context is the first
half of a sentence (cut at a space) and its choices are that sentence's true end and three
reorderings of the end's words, in a seeded random order (chance: 25%; every choice has the same
characters, so acc and acc_norm agree and only word order tells them apart).

    build/lingua prepare out_dir=/tmp/demo_data source=moby_dick val_fraction=0.02 data/demo/moby_dick.txt.gz
    python3 scripts/make_demo_task.py /tmp/demo_data/moby_dick/moby_dick.val.jsonl [--examples 200]
"""
import argparse
import json
import os
import random
import re


def sentences(paragraph):
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", " ".join(paragraph.split()))
    return [p for p in parts if 20 <= len(p) <= 200]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("val_jsonl")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "demo",
                                                  "moby_sentence_end.jsonl"))
    a = ap.parse_args()
    halves = []
    for line in open(a.val_jsonl, encoding="utf-8"):
        for para in json.loads(line)["text"].split("\n\n"):
            for s in sentences(para):
                cut = s.find(" ", len(s) // 2)
                if cut > 0:
                    halves.append((s[:cut], s[cut + 1:]))
    rng = random.Random(a.seed)
    rng.shuffle(halves)
    with open(a.out, "w", encoding="utf-8") as f:
        written = 0
        for context, true_end in halves:
            words = true_end.split(" ")
            if len(words) < 4 or written == a.examples:
                continue
            distractors = []
            while len(distractors) < 3:
                w = words[:]
                rng.shuffle(w)
                d = " ".join(w)
                if d != true_end and d not in distractors:
                    distractors.append(d)
            written += 1
            choices = distractors + [true_end]
            rng.shuffle(choices)
            f.write(json.dumps({"context": context, "choices": choices, "gold": choices.index(true_end)}) + "\n")


if __name__ == "__main__":
    main()
