#!/usr/bin/env python3
"""mpi suite: a run split over several ranks trains the same model as one rank.

For a tiny model of each family, 5 training steps with a fixed seed: the loss at every
step within 1e-5 relative of the single-rank run, and every final parameter tensor
within 1e-5 relative (||a - b||_2 / ||b||_2 over the whole tensor, read from
run.final_weights), for each layout this build supports: dp2 and dp2 + ZeRO-1. A layout
that does not fit the world size is refused with exit 2 and a message naming the
factors. Runs with Debian's /usr/bin/python3 (numpy); the ranks run under mpiexec
(Open MPI, --oversubscribe: 2 cores).
usage: /usr/bin/python3 test_layouts.py /path/to/anvil
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from tensorfile import read_tensorfile  # noqa: E402

TOL = 1e-5
STEPS = 5
LR = 3e-3
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")
LAYOUTS = [  # name, ranks, overrides
    ("dp2", 2, ["parallel.dp=2"]),
    ("dp2+zero1", 2, ["parallel.dp=2", "parallel.zero=1"]),
]
FAMILIES = {
    "gpt2": ["model.preset=gpt2-tiny"],
    "llama": ["model.preset=llama-tiny", "model.n_kv_head=2", "model.tie_embeddings=false"],
}


def run(anvil, ranks, args, check=True):
    cmd = [anvil, "train"] + args
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe"] + cmd
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        print(f"FAIL: {' '.join(cmd)} exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        sys.exit(1)
    return p


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(l)["loss"] for l in f if '"loss"' in l]


def main():
    anvil = os.path.abspath(sys.argv[1])
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "t.txt")
        with open(text, "w") as f:
            f.write(" ".join(f"word{(i * 7919) % 97} of line {i % 13}." for i in range(4000)))
        subprocess.run([anvil, "prepare", "text", "--out", os.path.join(tmp, "data"),
                        "--val-frac", "0", text], check=True, capture_output=True)
        common = [f"data.train={tmp}/data/train_*.bin", "data.val=", f"train.steps={STEPS}",
                  "train.seq_len=32", "train.micro_batch=2", "train.global_batch_tokens=256",
                  f"train.lr={LR}", "train.warmup_steps=2", "optim.grad_clip=0.5"]
        for fam, fam_args in FAMILIES.items():
            ref_dir = os.path.join(tmp, f"{fam}-ref")
            run(anvil, 1, common + fam_args + [f"run.dir={ref_dir}",
                                                f"run.final_weights={ref_dir}/w.bin"])
            ref_loss = losses(ref_dir)
            ref_w = read_tensorfile(f"{ref_dir}/w.bin")
            for name, ranks, lay in LAYOUTS:
                d = os.path.join(tmp, f"{fam}-{name}")
                run(anvil, ranks, common + fam_args + lay + [f"run.dir={d}",
                                                             f"run.final_weights={d}/w.bin"])
                got = losses(d)
                lerr = max(abs(a - b) / abs(b) for a, b in zip(got, ref_loss))
                w = read_tensorfile(f"{d}/w.bin")
                werr, worst = 0.0, ""
                drift_ok = True
                for k, b in ref_w.items():
                    if fam == "gpt2" and k.endswith(".attn.wk.bias"):
                        # Its gradient is zero in exact arithmetic (softmax removes a
                        # per-row constant): AdamW turns rounding noise into updates of
                        # about lr, differently on every layout. Bound the movement only.
                        drift_ok &= float(np.abs(w[k]).max()) <= 2 * LR * STEPS
                        continue
                    e = float(np.linalg.norm(w[k].astype(np.float64) - b) /
                              max(np.linalg.norm(b.astype(np.float64)), 1e-30))
                    if e > werr:
                        werr, worst = e, k
                ok = (len(got) == len(ref_loss) == STEPS and lerr < TOL and werr < TOL
                      and drift_ok and set(w) == set(ref_w))
                fails += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {fam:5} {name:10} {ranks} ranks: loss max rel "
                      f"err {lerr:.2e}, final weights max rel err {werr:.2e} ({worst}) "
                      f"(tol {TOL})")
        # a layout that does not fit the world is refused, naming the factors
        p = run(anvil, 3, common + FAMILIES["gpt2"] + ["parallel.dp=2",
                                                      f"run.dir={tmp}/bad"], check=False)
        ok = p.returncode == 2 and "world 3" in p.stderr and "dp 2" in p.stderr
        fails += not ok
        print(f"{'ok  ' if ok else 'FAIL'} dp2 on 3 ranks refused: exit {p.returncode}: "
              f"{p.stderr.strip().splitlines()[0] if p.stderr.strip() else '(no message)'}")
    print(f"layouts: {'all passed' if not fails else f'{fails} failed'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
