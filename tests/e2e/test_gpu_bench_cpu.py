#!/usr/bin/env python3
"""e2e suite: tests/bench/gpu_bench.sh works end to end, run on the cpu with tiny models
(DEVICE=cpu), so that the script a GPU session spends its few minutes on cannot rot
unnoticed. Debian's python3 (/usr/bin/python3: torch, for the PyTorch baseline).

usage: /usr/bin/python3 test_gpu_bench_cpu.py ANVIL

One run of both models (gpt2-tiny and llama-tiny shapes through EXTRA_*, 3 steps, 1
warm-up, the per-op profile of step 1, the baseline eager in fp32) with a device of
1539 MiB by anvil's test hook (ANVIL_TEST_DEVICE_MIB): 3 MiB free after the plan's
1.5 GiB margin, which fits the GPT-2 shape's plan at B=2 (2.9 MiB) but not at B=4
(3.8 MiB). Checks: exit 0; the micro-batch picked by `anvil plan` is 2 for GPT-2; the
table has, for each model, an anvil row and a PyTorch row with tokens/s and ms/step,
and the anvil / PyTorch ratio; anvil's log holds its profile table and both trainers
ran the configured number of steps. And tests/bench/sdpa_bench.py runs (its unfused
`math` way, the only one on the cpu), as does tests/bench/mm_bench.py on one small product.
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402


def main():
    anvil = os.path.abspath(sys.argv[1])
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    tmp = tempfile.mkdtemp(prefix="anvil-bench-cpu-")
    shard = os.path.join(tmp, "s257.bin")
    subprocess.run([sys.executable, os.path.join(repo, "tests/reference/torch_baseline.py"),
                    "--make-shard", shard, "--tokens", "8000", "--vocab", "257"],
                   check=True, capture_output=True)
    out = os.path.join(tmp, "out")
    env = dict(os.environ, ANVIL=anvil, OUT=out, PYTHON=sys.executable, DEVICE="cpu",
               STEPS="3", WARMUP="1", PROFILE_STEP="1", T_GPT2="32", T_LLAMA="32",
               MB_MAX_GPT2="4", MB_MAX_LLAMA="4", GB_GPT2="256", GB_LLAMA="256",
               SHARD_GPT2=shard, SHARD_LLAMA=shard,
               EXTRA_GPT2="model.preset=gpt2-tiny model.vocab_size=257",
               EXTRA_LLAMA="model.preset=llama-tiny model.vocab_size=257",
               TORCH_ARGS="--no-compile --dtype fp32", ANVIL_TEST_DEVICE_MIB="1539",
               OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", os.path.join(repo, "tests/bench/gpu_bench.sh")], env=env,
                       capture_output=True, text=True, timeout=600)
    report(p.returncode == 0, f"gpu_bench.sh DEVICE=cpu: exit {p.returncode}"
           + ("" if p.returncode == 0 else f": {(p.stdout + p.stderr)[-600:]}"))
    picked = re.search(r"gpt2: micro-batch (\d+)", p.stdout)
    report(picked is not None and picked.group(1) == "2",
           f"GPT-2 micro-batch picked by anvil plan on a 3 MiB device: "
           f"{picked.group(1) if picked else 'none'} (want 2: B=4 needs 3.8 MiB)")
    logs = os.path.join(out, "gpu_bench")
    try:
        table = open(os.path.join(logs, "table.md")).read()
    except OSError:
        table = ""
    for label in ("GPT-2 124M", "Llama 1B"):
        rows = [r for r in table.splitlines() if r.startswith(f"| {label} |")]
        cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
        num = re.compile(r"^[0-9]+(\.[0-9]+)?$")
        ok = (len(cells) == 2 and cells[0][1] == "anvil" and cells[1][1].startswith("PyTorch")
              and all(num.match(c[2]) and num.match(c[3]) for c in cells)
              and re.match(r"^[0-9.]+x$", cells[0][7]) is not None)
        report(ok, f"{label}: anvil and PyTorch rows with tokens/s, ms/step and the ratio: "
               + (" / ".join(" ".join(c[1:4] + c[7:8]) for c in cells) if cells else "missing"))
    for name in ("gpt2", "llama"):
        try:
            log = open(os.path.join(logs, f"{name}.anvil.log")).read()
            steps = [l for l in open(os.path.join(logs, f"{name}.anvil.metrics.jsonl"))
                     if '"loss"' in l]
        except OSError:
            log, steps = "", []
        report("profile of step 1" in log and len(steps) == 3,
               f"{name}: anvil's per-op profile in its log ({'profile of step 1' in log}), "
               f"{len(steps)} of 3 steps in metrics.jsonl")
    # tests/bench/sdpa_bench.py (the PyTorch attention kernels beside anvil's profile):
    # on the cpu only its unfused `math` way runs, which keeps the script itself working
    p = subprocess.run([sys.executable, os.path.join(repo, "tests/bench/sdpa_bench.py"),
                        "--device", "cpu", "--shapes", "t=2,64,4,2,16", "--iters", "1",
                        "--warmup", "0"], capture_output=True, text=True, timeout=120)
    row = [l for l in p.stdout.splitlines() if l.startswith("t B=2 T=64 heads 4/2 x 16")]
    report(p.returncode == 0 and any(" math " in l for l in row),
           f"sdpa_bench.py on the cpu: exit {p.returncode}, rows: {row or p.stderr[-300:]}")
    # tests/bench/mm_bench.py (PyTorch's matmuls beside the profile's matmul rows), one
    # small product on the cpu: the script runs and prints its row with the FLOP rates
    p = subprocess.run([sys.executable, os.path.join(repo, "tests/bench/mm_bench.py"),
                        "--device", "cpu", "--models", "t=64,32,48", "--iters", "1",
                        "--warmup", "0"], capture_output=True, text=True, timeout=120)
    row = [l for l in p.stdout.splitlines() if l.startswith("t t: matmul 64x32 -> 48")]
    report(p.returncode == 0 and len(row) == 1 and len(row[0].split()) == 10,
           f"mm_bench.py on the cpu: exit {p.returncode}, rows: {row or p.stderr[-300:]}")
    subprocess.run(["rm", "-rf", tmp])
    sys.exit(summary())


if __name__ == "__main__":
    main()
