#!/usr/bin/env python3
"""PyTorch anchor for bench/ffn_bench.cpp: the same SwiGLU FFN layers (dense, lowrank, blockdense,
blockshuffle; SPEC §3 shapes and permutations) written in PyTorch, bf16, torch.compile, timed the same
way (median CUDA-event time of forward alone under no_grad, and of forward + backward). Prints the
same JSON lines as lingua_ffn_bench with "impl": "torch"."""
import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F


def blockdiag(x, w):
    """x [N, k*i], w [k, o, i] -> [N, k*o]: block c of the output is block c of x times w[c]^T."""
    n = x.shape[0]
    k, o, i = w.shape
    return torch.bmm(x.view(n, k, i).transpose(0, 1), w.transpose(1, 2)).transpose(0, 1).reshape(n, k * o)


def param(*shape, fan_in):
    return nn.Parameter(torch.randn(*shape) * fan_in ** -0.5)


class Dense(nn.Module):
    def __init__(self, out, inp, a):
        super().__init__()
        self.w = param(out, inp, fan_in=inp)

    def forward(self, x):
        return F.linear(x, self.w)


class LowRank(nn.Module):
    def __init__(self, out, inp, a):
        super().__init__()
        self.a, self.b = param(a.rank, inp, fan_in=inp), param(out, a.rank, fan_in=a.rank)

    def forward(self, x):
        return F.linear(F.linear(x, self.a), self.b)


class BlockDense(nn.Module):
    def __init__(self, out, inp, a):
        super().__init__()
        k, r = a.nblocks, a.rank
        self.a, self.b = param(k, r // k, inp // k, fan_in=inp // k), param(out, r, fan_in=r)

    def forward(self, x):
        return F.linear(blockdiag(x, self.a), self.b)


class BlockShuffle(nn.Module):
    def __init__(self, out, inp, a):
        super().__init__()
        k = self.k = a.nblocks
        q = self.q = min(inp, out) // k
        self.w1, self.w2 = param(k, q, inp // k, fan_in=inp // k), param(k, out // k, q, fan_in=q)

    def forward(self, x):
        n, k, q = x.shape[0], self.k, self.q
        z = blockdiag(x, self.w1)
        u = z.view(n, q, k).transpose(1, 2).reshape(n, k * q)  # block c takes z[a*k + c]
        v = blockdiag(u, self.w2)
        return v.view(n, k, -1).transpose(1, 2).reshape(n, -1)  # output a*k + c = block c's a


KINDS = {"swiglu": Dense, "lowrank": LowRank, "blockdense": BlockDense, "blockshuffle": BlockShuffle}


class FFN(nn.Module):
    def __init__(self, kind, dim, hidden, a):
        super().__init__()
        self.fc1, self.fc2 = KINDS[kind](2 * hidden, dim, a), KINDS[kind](dim, hidden, a)

    def forward(self, x):
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


def median_ms(fn, iters):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--widths", default="768,1024,1536,2048")
    p.add_argument("--tokens", default="16,256,4096,16384")
    p.add_argument("--variants", default="swiglu,lowrank,blockdense,blockshuffle")
    p.add_argument("--rank-ratio", type=float, default=0.5)
    p.add_argument("--blockdense-rank-ratio", type=float, default=0.25)
    p.add_argument("--nblocks", type=int, default=4)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--graphs", type=int, default=0, help="1: torch.compile mode reduce-overhead (CUDA graphs)")
    args = p.parse_args()
    if args.graphs and args.no_compile:
        p.error("--graphs uses torch.compile's CUDA graphs (mode reduce-overhead): not with --no-compile")
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.graphs:
        # CUDA-graph trees reuse the output memory of a replay for the next one, and the timed
        # training step keeps an output across calls ("accessing tensor output of CUDAGraphs that
        # has been overwritten"): one graph per compiled function instead (measured 2026-12-07).
        import torch._inductor.config as inductor_config
        inductor_config.triton.cudagraph_trees = False
    # One compiled graph per model and mode: every FFN shares forward's code object, and the
    # default limit (8) would silently send later models to eager.
    torch._dynamo.config.cache_size_limit = 1024
    torch._dynamo.config.recompile_limit = 1024
    for kind in args.variants.split(","):
        for width in map(int, args.widths.split(",")):
            hidden = 4 * width
            a = argparse.Namespace(nblocks=args.nblocks,
                                   rank=int((args.blockdense_rank_ratio if kind == "blockdense" else args.rank_ratio) * width))
            torch._dynamo.reset()
            model = FFN(kind, width, hidden, a).cuda().to(torch.bfloat16)
            params = sum(t.numel() for t in model.parameters())
            mode = "reduce-overhead" if args.graphs else None
            run = model if args.no_compile else torch.compile(model, dynamic=False, mode=mode)
            for n in map(int, args.tokens.split(",")):
                x = torch.randn(n, width, device="cuda", dtype=torch.bfloat16)
                xg = x.clone().requires_grad_(True)
                dout = torch.randn(n, width, device="cuda", dtype=torch.bfloat16)

                def forward():
                    with torch.no_grad():
                        run(x)

                def train():
                    run(xg).backward(dout)

                fwd, trn = median_ms(forward, args.iters), median_ms(train, args.iters)
                flops = 2.0 * params * n
                impl = "torch" + ("" if args.no_compile else "+compile") + ("+graphs" if args.graphs else "")
                print(json.dumps({"impl": impl, "variant": kind,
                                  "kind": kind, "width": width, "hidden": hidden, "rank": a.rank,
                                  "nblocks": a.nblocks, "tokens": n, "params": params,
                                  "forward_ms": round(fwd, 4), "train_ms": round(trn, 4),
                                  "forward_tflops": round(flops / fwd * 1e-9, 2),
                                  "train_tflops": round(3 * flops / trn * 1e-9, 2)}), flush=True)
                model.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
