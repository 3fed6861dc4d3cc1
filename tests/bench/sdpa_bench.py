#!/usr/bin/env python3
"""tests/bench/sdpa_bench.py: PyTorch's fused attention kernels (scaled_dot_product_attention
with the flash, cuDNN and memory-efficient backends) timed at the benchmark's attention
shapes, forward and forward + backward, in the FLOP convention of anvil's per-op profile
(trainer/profile.c: per query head, the causal half's T (T + 1) / 2 scores, 2 products of
HS forward and 5 backward). Side by side with the attention rows of anvil's profile
(`gpu_bench.sh` prints them), this says whether kernels/cuda/attention.cu or cuDNN's
attention is the faster; a benchmark, not a test.

usage: python3 tests/bench/sdpa_bench.py [--device cuda|cpu] [--shapes gpt2 llama ...]
       [--backends flash,cudnn,efficient,math] [--iters N] [--warmup N]
Shapes (B, T, query heads, kv heads, head size): gpt2 64 1024 12 12 64, llama 8 2048 32 8
64 (the micro-batches gpu_bench.sh picks on an H200), or NAME=B,T,NH,KVH,HS. bf16 on
cuda, fp32 on the cpu (where only `math`, the unfused reference, is meaningful; the
cpu run checks this script, not speed). Grouped-query heads: enable_gqa where PyTorch
has it, else K and V repeated before the clock starts. A backend PyTorch refuses for a
shape is reported as such. Exit 0 unless nothing could be timed.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from torch_clock import clock   # tests/bench/torch_clock.py, beside this script

SHAPES = {"gpt2": (64, 1024, 12, 12, 64), "llama": (8, 2048, 32, 8, 64)}


def flops(B, T, NH, HS, products):
    return products * 2.0 * B * NH * (T * (T + 1) / 2.0) * HS


def backend_ctx(name):
    """A context manager that restricts SDPA to one backend (None for `math` by hand)."""
    if name == "math":
        return None
    nn_attention = getattr(torch.nn, "attention", None)
    if nn_attention is not None and hasattr(nn_attention, "sdpa_kernel"):
        B = nn_attention.SDPBackend
        which = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "efficient": "EFFICIENT_ATTENTION"}[name]
        if not hasattr(B, which):
            raise RuntimeError(f"this PyTorch has no {which}")
        return nn_attention.sdpa_kernel(getattr(B, which))
    if name == "cudnn":
        raise RuntimeError("this PyTorch has no cuDNN attention backend")
    return torch.backends.cuda.sdp_kernel(enable_flash=name == "flash",
                                          enable_mem_efficient=name == "efficient",
                                          enable_math=False)


def attention(q, k, v, name, gqa):
    if name == "math":     # unfused: scores materialized, causal mask, softmax
        if k.shape[1] != q.shape[1]:
            r = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        T = q.shape[2]
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        return torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
    kw = {"enable_gqa": True} if gqa and k.shape[1] != q.shape[1] else {}
    with backend_ctx(name):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)


def supports_gqa():
    """Whether this PyTorch's SDPA takes enable_gqa (2.5 and later), tried on a tiny call."""
    try:
        x, y = torch.zeros(1, 2, 4, 8), torch.zeros(1, 1, 4, 8)
        F.scaled_dot_product_attention(x, y, y, is_causal=True, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", nargs="+", default=["gpt2", "llama"],
                    help="gpt2, llama or NAME=B,T,NH,KVH,HS")
    ap.add_argument("--backends", default=None, help="default: flash,cudnn,efficient on "
                    "cuda, math on the cpu")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    dev = a.device
    backends = (a.backends or ("flash,cudnn,efficient" if dev == "cuda" else "math")).split(",")
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    gqa = has_sdpa and supports_gqa()
    print(f"sdpa_bench: PyTorch {torch.__version__}, {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else "")
          + f", {dtype}; FLOPs as anvil's profile counts them (fwd 2, bwd 5 products of the "
          "causal half)")
    print(f"{'shape':36s} {'backend':10s} {'fwd ms':>8s} {'TFLOP/s':>8s} {'bwd ms':>8s} "
          f"{'TFLOP/s':>8s}")
    timed = 0
    for spec in a.shapes:
        name, _, dims = spec.partition("=")
        B, T, NH, KVH, HS = (tuple(int(x) for x in dims.split(",")) if dims else SHAPES[name])
        label = f"{name} B={B} T={T} heads {NH}/{KVH} x {HS}"
        g = torch.Generator(device="cpu").manual_seed(1)
        q = torch.randn(B, NH, T, HS, generator=g).to(dev, dtype)
        k = torch.randn(B, KVH, T, HS, generator=g).to(dev, dtype)
        v = torch.randn(B, KVH, T, HS, generator=g).to(dev, dtype)
        if not gqa and KVH != NH:        # repeated before the clock, as the doc says
            k, v = k.repeat_interleave(NH // KVH, dim=1), v.repeat_interleave(NH // KVH, dim=1)
        for be in backends:
            if be != "math" and not has_sdpa:
                print(f"{label:36s} {be:10s} PyTorch {torch.__version__} has no "
                      "scaled_dot_product_attention")
                continue
            qg, kg, vg = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
            try:
                o = attention(qg, kg, vg, be, gqa)
                do = torch.randn_like(o)

                def fwd():
                    with torch.no_grad():
                        attention(q, k, v, be, gqa)

                def fwd_bwd():
                    attention(qg, kg, vg, be, gqa).backward(do)

                ms_f = clock(dev, fwd, a.warmup, a.iters)
                ms_fb = clock(dev, fwd_bwd, a.warmup, a.iters)
            except Exception as e:   # noqa: BLE001 (a backend refused: say so, go on)
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"{label:36s} {be:10s} not available: {msg[:90]}")
                continue
            ms_b = ms_fb - ms_f
            tf = flops(B, T, NH, HS, 2) / (ms_f * 1e-3) / 1e12
            tb = flops(B, T, NH, HS, 5) / (ms_b * 1e-3) / 1e12 if ms_b > 0 else float("nan")
            print(f"{label:36s} {be:10s} {ms_f:8.3f} {tf:8.1f} {ms_b:8.3f} {tb:8.1f}")
            timed += 1
            del qg, kg, vg, o, do
        if dev == "cuda":
            torch.cuda.empty_cache()
    sys.exit(0 if timed else 1)


if __name__ == "__main__":
    main()
