#!/usr/bin/env python3
"""PyTorch anchor for bench/decode_bench.cpp: a Llama model (RMSNorm, RoPE, causal attention with a
KV cache, SwiGLU FFN) whose FFN layers are dense or structured (the layers of
bench/torch_structured_ffn.py; every layer but the first structured), in bf16, decoding B
sequences in step as lingua_decode_bench does: a prefill of the prompts, then one token per
sequence and step, each step's last-position logits copied to the host as fp32. Eager PyTorch
(what `generate` loops over a Hugging Face model run). --max-batch doubles the batch until it no
longer fits and reports the largest that does. Prints the same JSON lines as lingua_decode_bench
with "impl": "torch".

    python3 bench/torch_decode.py --ffn lowrank --rank 512 [--dim 1024 --layers 24 --heads 16
        --vocab 32000 --hidden 4096 --nblocks 4 --prompts 1,16,128 --batches 1 --max-batch
        --gen 32 --iters 10]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_structured_ffn import FFN


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.h, self.hd = heads, dim // heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin, cache, pos):
        bsz, n = x.shape[:2]
        q, k, v = self.wqkv(x).view(bsz, n, 3, self.h, self.hd).unbind(2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        kc, vc = cache
        kc[:, pos:pos + n], vc[:, pos:pos + n] = k, v
        k, v = kc[:, :pos + n], vc[:, :pos + n]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=n > 1 and pos == 0)
        return self.wo(o.transpose(1, 2).reshape(bsz, n, -1))


def rope(x, cos, sin):
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2)


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, ffn, a):
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.ffn = FFN(ffn, dim, hidden, a)

    def forward(self, x, cos, sin, cache, pos):
        x = x + self.attn(self.n1(x), cos, sin, cache, pos)
        bsz, n, dim = x.shape
        return x + self.ffn(self.n2(x).reshape(bsz * n, dim)).view(bsz, n, dim)  # the layers take rows


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.emb = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList(Block(a.dim, a.heads, a.hidden, "swiglu" if l == 0 else a.ffn, a)
                                    for l in range(a.layers))
        self.norm = nn.RMSNorm(a.dim)
        self.out = nn.Linear(a.dim, a.vocab, bias=False)
        hd = a.dim // a.heads
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(a.max_len).float(), freqs)
        self.register_buffer("cos", ang.cos()[:, None, :], persistent=False)
        self.register_buffer("sin", ang.sin()[:, None, :], persistent=False)

    def new_cache(self, bsz):
        hd = self.a.dim // self.a.heads
        return [(torch.empty(bsz, self.a.max_len, self.a.heads, hd, device="cuda", dtype=torch.bfloat16),
                 torch.empty(bsz, self.a.max_len, self.a.heads, hd, device="cuda", dtype=torch.bfloat16))
                for _ in self.blocks]

    def forward(self, ids, cache, pos):
        bsz, n = ids.shape
        cos, sin = self.cos[pos:pos + n].to(torch.bfloat16), self.sin[pos:pos + n].to(torch.bfloat16)
        x = self.emb(ids)
        for b, c in zip(self.blocks, cache):
            x = b(x, cos, sin, c, pos)
        return self.out(self.norm(x[:, -1])).float().cpu()


def time_decode(model, a, bsz, P, iters):
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(0, a.vocab, (bsz, a.max_len), device="cuda")
    prefill, step = [], []
    for it in range(iters + 2):
        cache = model.new_cache(bsz)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(ids[:, :P], cache, 0)  # returns with the logits on the host
        if it >= 2:
            prefill.append((time.perf_counter() - t0) * 1e3)
        for g in range(a.gen):
            t0 = time.perf_counter()
            model(ids[:, P + g:P + g + 1], cache, P + g)
            if it >= 2:
                step.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(prefill), statistics.median(step), torch.cuda.max_memory_allocated() / 2 ** 30


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ffn", default="swiglu")
    p.add_argument("--name", default="")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--rank", type=int, default=512)
    p.add_argument("--nblocks", type=int, default=4)
    p.add_argument("--prompts", default="1,16,128")
    p.add_argument("--batches", default="1")
    p.add_argument("--max-batch", action="store_true")
    p.add_argument("--gen", type=int, default=32)
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()
    prompts = [int(x) for x in a.prompts.split(",")]
    a.max_len = max(prompts) + a.gen
    torch.manual_seed(0)
    model = Model(a).cuda().to(torch.bfloat16).eval()
    def report(P, bsz, prefill, per, peak, largest):
        print(json.dumps({"impl": "torch", "bench": "decode", "name": a.name, "ffn": a.ffn, "dim": a.dim,
                          "n_layers": a.layers, "prompt": P, "gen": a.gen, "batch": bsz, "largest_batch": largest,
                          "prefill_ms": round(prefill, 4), "decode_ms_per_token": round(per, 4),
                          "decode_tokens_per_s": round(1e3 * bsz / per, 1),
                          "peak_mem_gib": round(peak, 3),
                          "device": torch.cuda.get_device_name()}), flush=True)

    batches = [int(x) for x in a.batches.split(",")]
    with torch.inference_mode():
        for P in prompts:
            for bsz in batches:
                report(P, bsz, *time_decode(model, a, bsz, P, a.iters), False)
            if not a.max_batch:
                continue
            bsz, fits = max(batches), None
            while bsz <= 32768:
                try:
                    fits = (bsz, *time_decode(model, a, bsz, P, 1))
                except RuntimeError as e:  # torch.cuda.OutOfMemoryError, or a library's failed allocation
                    if not isinstance(e, torch.cuda.OutOfMemoryError) and "ALLOC" not in str(e) \
                            and "out of memory" not in str(e):
                        raise
                    break
                finally:
                    torch.cuda.empty_cache()
                bsz *= 2
            if fits:
                report(P, fits[0], fits[1], fits[2], fits[3], True)


if __name__ == "__main__":
    main()
