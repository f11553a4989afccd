#!/usr/bin/env python3
"""Python anchors for lingua_tokenizer_bench (issue 14), on the GPU machine where Python tiktoken
and HF tokenizers are installed: the same file cut into the same paragraphs, encoded by one thread
and by all threads, median of `repeat`. One JSON line per run.

  python3 bench/tokenizer_python.py --file moby.txt --tiktoken-json cl100k_base.json \
      --hf-json llama3/tokenizer.json [--exported-json cl100k_tokenizer.json] [--threads 1,16]

--tiktoken-json: npm tiktoken's encoder file (pat_str, bpe_ranks), built into a tiktoken.Encoding
(no download). --exported-json: the tokenizer.json `lingua export-hf` wrote for that tiktoken
vocabulary; its ids through HF tokenizers are compared with tiktoken's on every paragraph
("exported_parity" line).
"""
import argparse
import base64
import json
import os
import time


def paragraphs(text):
    docs, p = [], 0
    while p < len(text):
        q = text.find("\n\n", p)
        q = len(text) if q < 0 else q + 2
        docs.append(text[p:q])
        p = q
    return docs


def npm_tiktoken(path):
    import tiktoken

    j = json.load(open(path))
    ranks = {}
    for line in j["bpe_ranks"].split("\n"):
        fields = line.split()
        if len(fields) < 2:
            continue
        rank = int(fields[1])
        for b64 in fields[2:]:
            ranks[base64.b64decode(b64)] = rank
            rank += 1
    return tiktoken.Encoding(name=os.path.basename(path), pat_str=j["pat_str"], mergeable_ranks=ranks,
                             special_tokens={})


def timed(fn, repeat):
    secs = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        secs.append(time.perf_counter() - t0)
    secs.sort()
    return secs[len(secs) // 2], out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--tiktoken-json")
    ap.add_argument("--hf-json")
    ap.add_argument("--exported-json")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    raw = open(a.file, "rb").read()
    text = raw.decode("utf-8", errors="replace")
    docs = paragraphs(text)
    nbytes = len(raw)
    threads = [int(t) for t in a.threads.split(",")]

    def report(impl, tokenizer, n, s, tokens):
        print(json.dumps({"impl": impl, "tokenizer": tokenizer, "threads": n, "bytes": nbytes, "documents": len(docs),
                          "tokens": tokens, "seconds": round(s, 4), "mb_per_s": round(nbytes / s / 1e6, 2),
                          "tokens_per_s": round(tokens / s)}), flush=True)

    if a.tiktoken_json:
        enc = npm_tiktoken(a.tiktoken_json)
        for n in threads:
            if n == 1:
                s, ids = timed(lambda: [enc.encode_ordinary(d) for d in docs], a.repeat)
            else:
                s, ids = timed(lambda: enc.encode_ordinary_batch(docs, num_threads=n), a.repeat)
            report("python tiktoken", os.path.basename(a.tiktoken_json), n, s, sum(map(len, ids)))
        if a.exported_json:
            from tokenizers import Tokenizer

            hf = Tokenizer.from_file(a.exported_json)
            bad = [i for i, d in enumerate(docs) if hf.encode(d, add_special_tokens=False).ids != enc.encode_ordinary(d)]
            print(json.dumps({"exported_parity": not bad, "documents": len(docs), "differing": len(bad),
                              "first": docs[bad[0]][:80] if bad else None}), flush=True)
    if a.hf_json:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(a.hf_json)
        for n in threads:
            # HF tokenizers parallelises encode_batch over RAYON_NUM_THREADS (read at first use),
            # so one thread is measured with single encode calls.
            if n == 1:
                s, encs = timed(lambda: [tok.encode(d, add_special_tokens=False) for d in docs], a.repeat)
            else:
                s, encs = timed(lambda: tok.encode_batch(docs, add_special_tokens=False), a.repeat)
            report("python HF tokenizers", os.path.basename(os.path.dirname(a.hf_json)) or a.hf_json, n, s,
                   sum(len(e.ids) for e in encs))


if __name__ == "__main__":
    main()
