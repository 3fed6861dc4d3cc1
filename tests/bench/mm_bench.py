#!/usr/bin/env python3
"""tests/bench/mm_bench.py: PyTorch's bf16 matrix products (cuBLAS / cuBLASLt through
F.linear, as tests/reference/torch_baseline.py runs them) timed at every matmul shape of
the benchmark's two models, in the rows and FLOP convention of anvil's per-op profile
(trainer/profile.c: `matmul_forward N x C -> OC`, 2 N C OC; `matmul_backward N x C <- OC`,
dinp and dweight, 4 N C OC). Beside the matmul rows of anvil's profile (`gpu_bench.sh`
prints them), this says whether anvil's cuBLASLt plans run its products as fast as
PyTorch runs the same ones; the matmuls are 63% / 74% of a step by docs/perf.md's count.
A benchmark, not a test.

usage: python3 tests/bench/mm_bench.py [--device cuda|cpu] [--models gpt2 llama ...]
       [--iters N] [--warmup N]
Models (N rows = B T of the micro-batch gpu_bench.sh picks on an H200; C; products):
gpt2 N 65536, C 768: qkv 768 -> 2304, attention out 768 -> 768, fc 768 -> 3072, proj
3072 -> 768, head 768 -> 50304 (the vocabulary padded to 64, as the cuda backend pads
it); llama N 16384, C 2048: qkv 2048 -> 3072, out 2048 -> 2048, gate + up 2048 -> 16384,
down 8192 -> 2048, head 2048 -> 128256; or NAME=N,C,OC (one product). The weight
gradient comes out in bf16 here (PyTorch's, cast to fp32 only when accumulated into
.grad) and in fp32 in anvil (beta = 1 into the fp32 gradient): anvil's writes 2x the
bytes of an (OC, C) matrix, small beside the product for these shapes. bf16 on cuda,
fp32 on the cpu (the cpu run checks this script, not speed: --scale shrinks N).
Exit 0 unless nothing could be timed.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from torch_clock import clock   # tests/bench/torch_clock.py, beside this script

MODELS = {
    "gpt2": (65536, [("qkv", 768, 2304), ("attn_out", 768, 768), ("fc", 768, 3072),
                     ("proj", 3072, 768), ("head", 768, 50304)]),
    "llama": (16384, [("qkv", 2048, 3072), ("attn_out", 2048, 2048),
                      ("gate_up", 2048, 16384), ("down", 8192, 2048),
                      ("head", 2048, 128256)]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["gpt2", "llama"],
                    help="gpt2, llama or NAME=N,C,OC")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1, help="divide every N by this")
    a = ap.parse_args()
    dev = a.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    print(f"mm_bench: PyTorch {torch.__version__}, {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else "")
          + f", {dtype}; rows as anvil's profile names them (fwd 2 N C OC, bwd dinp + "
          "dweight 4 N C OC)")
    print(f"{'product':44s} {'fwd ms':>8s} {'TFLOP/s':>8s} {'bwd ms':>8s} {'TFLOP/s':>8s}")
    timed = 0
    for spec in a.models:
        name, _, dims = spec.partition("=")
        if dims:
            n, c, oc = (int(x) for x in dims.split(","))
            rows, prods = n, [(name, c, oc)]
        else:
            rows, prods = MODELS[name]
        N = max(1, rows // a.scale)
        for pname, C, OC in prods:
            label = f"{name} {pname}: matmul {N}x{C} -> {OC}"
            try:
                # random operands made on the device (the heads' dout is 4-7 GB): a
                # product of zeros would run faster than one of real data
                torch.manual_seed(1)
                x = torch.randn(N, C, device=dev, dtype=dtype) * 0.5
                w = torch.randn(OC, C, device=dev, dtype=dtype) * C ** -0.5
                xg = x.detach().clone().requires_grad_(True)
                wg = w.detach().clone().requires_grad_(True)
                dout = torch.randn(N, OC, device=dev, dtype=dtype)

                def fwd():
                    with torch.no_grad():
                        F.linear(x, w)

                def fwd_bwd():
                    xg.grad = wg.grad = None
                    F.linear(xg, wg).backward(dout)

                ms_f = clock(dev, fwd, a.warmup, a.iters)
                ms_fb = clock(dev, fwd_bwd, a.warmup, a.iters)
            except Exception as e:   # noqa: BLE001 (out of memory, say: say so, go on)
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"{label:44s} not timed: {msg[:90]}")
                continue
            ms_b = ms_fb - ms_f
            fl = 2.0 * N * C * OC
            tf = fl / (ms_f * 1e-3) / 1e12
            tb = 2 * fl / (ms_b * 1e-3) / 1e12 if ms_b > 0 else float("nan")
            print(f"{label:44s} {ms_f:8.3f} {tf:8.1f} {ms_b:8.3f} {tb:8.1f}")
            timed += 1
            del x, w, xg, wg, dout
            if dev == "cuda":
                torch.cuda.empty_cache()
    sys.exit(0 if timed else 1)


if __name__ == "__main__":
    main()
