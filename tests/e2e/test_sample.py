#!/usr/bin/env python3
"""e2e: `anvil sample` and `anvil ckpt` on a trained checkpoint.

A tiny GPT-2 is trained for 80 steps on byte-level text. Then:
- `anvil sample RUN --temperature 0` (greedy) must generate exactly the continuation
  the independent PyTorch reference (tests/reference/model.py, float64) generates
  greedily from the weights read out of the checkpoint's model.h5 with h5py, from the
  same prompt (end-of-text, then the prompt's bytes) with the same context window
  (train.seq_len tokens);
- the same prompt on standard input gives the same output; a seed makes sampling at
  temperature 1 repeatable;
- `anvil ckpt verify` exits 0 on the checkpoint and 2, naming the file, after a byte
  of a rank file is flipped; `anvil ckpt info` prints the step and the layout;
- bad input (no such checkpoint, a bad option value) exits 2 with one line, and so
  does `anvil train` resuming the checkpoint with another model shape.
Runs with Debian's /usr/bin/python3 (torch, numpy, h5py).
usage: /usr/bin/python3 test_sample.py /path/to/anvil
"""
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from model import Reference, Shape  # noqa: E402

T, EOT, V = 32, 256, 257
fails = 0


def check(ok, what):
    global fails
    fails += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)


def greedy_reference(model_h5, prompt, n):
    """Greedy continuation by the PyTorch reference, as byte-tokenizer text."""
    with h5py.File(model_h5, "r") as f:
        w = {k: f["param"][k][:] for k in f["param"]}
    shape = Shape(L=2, C=64, NH=4, KVH=4, HS=16, F=256, V=V, Vp=V, maxT=256,
                  family="gpt2", tied=True, qkv_bias=True, B=1, T=T)
    ref = Reference(shape, w)
    ids = [EOT] + list(prompt.encode())
    out = b""
    with torch.no_grad():
        for _ in range(n):
            ctx = torch.tensor([ids[-T:]], dtype=torch.int64)
            nxt = int(ref.forward(ctx)[0, -1, :V].argmax())
            ids.append(nxt)
            out += b"\n<|endoftext|>\n" if nxt == EOT else bytes([nxt])
    return out


def main():
    anvil = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "t.txt")
        with open(text, "w") as f:
            f.write("%\n".join(f"the cat sat on the mat {i % 7}.\n" for i in range(3000)))
        subprocess.run([anvil, "prepare", "text", "--out", f"{tmp}/data", "--doc-sep", "%",
                        "--val-frac", "0", text], check=True, capture_output=True)
        run = os.path.join(tmp, "run")
        p = subprocess.run([anvil, "train", f"data.train={tmp}/data/train_*.bin", "data.val=",
                            "model.preset=gpt2-tiny", f"train.seq_len={T}",
                            "train.micro_batch=8", "train.steps=80", "train.lr=3e-3",
                            f"run.dir={run}"], capture_output=True, text=True)
        check(p.returncode == 0, f"trained 80 steps (exit {p.returncode})")
        ckpt = os.path.join(run, "checkpoints", "step_00000080")

        prompt, n = "the cat", 40
        p = subprocess.run([anvil, "sample", run, "--prompt", prompt, "--max-tokens", str(n),
                            "--temperature", "0"], capture_output=True)
        got = p.stdout
        want = prompt.encode() + greedy_reference(os.path.join(ckpt, "model.h5"), prompt, n) + b"\n"
        check(p.returncode == 0 and got == want,
              f"greedy sample equals the PyTorch reference's greedy continuation: {got!r}"
              + ("" if got == want else f" != {want!r}"))
        q = subprocess.run([anvil, "sample", ckpt, "--max-tokens", str(n), "--temperature", "0"],
                           input=prompt.encode(), capture_output=True)
        check(q.returncode == 0 and q.stdout == got, "the prompt on standard input: same output")
        a = subprocess.run([anvil, "sample", run, "--prompt", "the", "--seed", "5",
                            "--top-k", "20", "--top-p", "0.9"], capture_output=True)
        b = subprocess.run([anvil, "sample", run, "--prompt", "the", "--seed", "5",
                            "--top-k", "20", "--top-p", "0.9"], capture_output=True)
        check(a.returncode == 0 and a.stdout == b.stdout and len(a.stdout) > 100,
              "temperature 1 with top-k/top-p: the same seed gives the same text")

        p = subprocess.run([anvil, "ckpt", "info", run], capture_output=True, text=True)
        check(p.returncode == 0 and "step 80" in p.stdout and "dp=1 tp=1 pp=1" in p.stdout,
              "ckpt info: step and layout")
        p = subprocess.run([anvil, "ckpt", "verify", ckpt], capture_output=True, text=True)
        check(p.returncode == 0, f"ckpt verify: ok (exit {p.returncode})")
        bad = os.path.join(tmp, "bad")
        shutil.copytree(ckpt, bad)
        with open(os.path.join(bad, "rank_00000_000.h5"), "r+b") as f:
            f.seek(5000)
            c = f.read(1)
            f.seek(5000)
            f.write(bytes([c[0] ^ 1]))
        p = subprocess.run([anvil, "ckpt", "verify", bad], capture_output=True, text=True)
        check(p.returncode == 2 and "rank_00000_000.h5" in p.stderr and
              len(p.stderr.strip().splitlines()) == 1,
              f"ckpt verify: a flipped byte, exit {p.returncode}: {p.stderr.strip()}")
        # resuming a checkpoint of another model: refused, one line naming the tensor
        p = subprocess.run([anvil, "train", f"data.train={tmp}/data/train_*.bin", "data.val=",
                            "model.preset=gpt2-tiny", "model.d_model=32", f"train.seq_len={T}",
                            "train.micro_batch=8", "train.steps=90", f"run.dir={run}"],
                           capture_output=True, text=True)
        lines = [l for l in p.stderr.splitlines() if l.startswith("anvil:")]
        check(p.returncode == 2 and len(lines) == 1 and "wte" in lines[0] and
              "64" in lines[0] and "32" in lines[0],
              f"resume with another model's shape: exit {p.returncode}, {lines}")
        for args, what in (([os.path.join(tmp, "nothing")], "no such checkpoint"),
                           ([run, "--top-p", "2"], "top-p out of range"),
                           ([run, "--max-tokens", "x"], "a non-number")):
            p = subprocess.run([anvil, "sample"] + args, capture_output=True, text=True)
            lines = [l for l in p.stderr.splitlines() if l.startswith("anvil:")]
            check(p.returncode == 2 and len(lines) == 1,
                  f"sample, {what}: exit {p.returncode}, {lines}")
    print(f"sample: {'all passed' if not fails else f'{fails} failed'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
