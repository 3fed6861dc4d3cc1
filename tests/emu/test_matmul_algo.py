#!/usr/bin/env python3
"""unit suite (tests/emu): train.matmul_algo, the timing of cuBLASLt's candidate
algorithms after the first step, on the emulated cuda backend.

usage: python3 test_matmul_algo.py ANVIL_EMULATED   (the first python3 on the PATH;
standard library only)

The timing runs the candidates on the model's activations and gradients, lent as
scratch between two steps (trainer/device.c), so what it must never do is change what
training computes. The emulated heuristic offers 3 algorithms that compute the same
bits (tests/emu/emu_cublaslt.cc), which makes that checkable exactly. For both families:
- the default (auto: timed) against heuristic, and its table of the problems timed
  (run.dir/matmul_algos_rank0.txt), 4 steps with an evaluation and a sample
  every 2, and under ANVIL_TEST_POISON_SCRATCH=1 (the activations and gradients filled
  with NaN after every step, so that anything read across a step boundary shows): the
  same final weights, bytes for bytes, the same losses and validation losses;
- with the first choice made slow (EMU_LT_SLOW_ALGO=0) the report must say every timed
  problem found a faster algorithm, and the calls each algorithm got (EMU_LT_CALLS)
  must add up: the first choice only in step 1 (a quarter of the heuristic run's 4
  steps) and in the timing itself (4 calls per problem: one untimed, 3 timed), the
  others from then on;
- train.deterministic=true keeps the first choice (auto times nothing), and
  train.matmul_algo=timed with it is refused: exit 2, one line naming both keys.
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402
from corpus import prepare_corpus  # noqa: E402
from emu_tiny import tiny_cuda_args, tiny_results  # noqa: E402


def train(anvil, tmp, shards, name, preset, extra, env_extra, steps=4):
    d = os.path.join(tmp, name)
    args = tiny_cuda_args(anvil, preset, shards, d, steps, 64, 256) + ["train.log_every=1"]
    calls = f"{d}.calls"
    env = dict(os.environ, EMU_LT_CALLS=calls, **env_extra)
    p = subprocess.run(args + extra, cwd=tmp, env=env, capture_output=True, text=True, errors="replace",
                       timeout=600)
    out = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "calls": {}}
    if p.returncode != 0:
        return out
    out["weights"], out["losses"], out["val"] = tiny_results(d)
    if os.path.exists(calls):
        with open(calls) as f:
            for l in f:
                _, i, n = l.split()
                out["calls"][int(i)] = int(n)
    m = re.search(r"matmul algorithms timed \(train\.matmul_algo\) in [0-9.]+ s: (\d+) of (\d+) "
                  r"problems faster .* (\d+) with one candidate, (\d+) without room", p.stdout)
    out["tune"] = tuple(int(g) for g in m.groups()) if m else None
    table = os.path.join(d, "matmul_algos_rank0.txt")
    out["table"] = open(table).read().splitlines() if os.path.exists(table) else None
    return out


def failed(tag, r):
    report(False, f"{tag}: exit {r['rc']}: {r['stderr'].strip()[-400:]}")


def main():
    anvil = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="anvil-mmalgo-")
    shards = prepare_corpus(anvil, tmp)
    busy = ["train.eval_every=2", f"data.val={shards}", "train.eval_tokens=256",
            "train.sample_every=2", "train.sample_tokens=8"]
    for preset in ("gpt2-tiny", "llama-tiny"):
        # 1. timing changes nothing that training computes
        h = train(anvil, tmp, shards, f"{preset}-h", preset,
                  busy + ["train.matmul_algo=heuristic"], {})
        t = train(anvil, tmp, shards, f"{preset}-t", preset, busy,
                  {"ANVIL_TEST_POISON_SCRATCH": "1"})
        if h["rc"] != 0 or t["rc"] != 0:
            failed(f"{preset}: heuristic / auto with poison", h if h["rc"] else t)
        else:
            same = h["weights"] == t["weights"]
            report(t["tune"] is not None and t["tune"][1] > 0 and t["tune"][3] == 0,
                   f"{preset}: auto timed the first step's problems: {t['tune']} "
                   "(faster, timed, one candidate, without room)")
            report(same and h["losses"] == t["losses"] and h["val"] == t["val"] and
                   len(h["losses"]) == 4 and len(h["val"]) == 2,
                   f"{preset}: heuristic vs timed with the scratch poisoned after every step "
                   f"(evaluation and sampling between): final weights "
                   f"{'identical' if same else 'DIFFER'} ({len(h['weights'])} bytes), losses "
                   f"{h['losses']} vs {t['losses']}, val {h['val']} vs {t['val']}")
            tab = t["table"] or []
            report(t["tune"] is not None and len(tab) == 1 + t["tune"][1] and
                   h["table"] is None and
                   sum(" faster kept " in l for l in tab) == t["tune"][0],
                   f"{preset}: run.dir/matmul_algos_rank0.txt: a header and one line per timed "
                   f"problem ({len(tab)} lines), none from the heuristic run; e.g. "
                   f"{tab[1] if len(tab) > 1 else None!r}")
            report(set(h["calls"]) == {0},
                   f"{preset}: heuristic: only the first choice ran ({h['calls']})")

        # 2. the fastest is kept, and used from step 2 on
        slow = {"EMU_LT_SLOW_ALGO": "0"}
        hs = train(anvil, tmp, shards, f"{preset}-hs", preset,
                   ["train.matmul_algo=heuristic"], slow)
        ts = train(anvil, tmp, shards, f"{preset}-ts", preset, ["train.matmul_algo=timed"],
                   slow)
        if hs["rc"] != 0 or ts["rc"] != 0:
            failed(f"{preset}: slow first choice", hs if hs["rc"] else ts)
        else:
            tune = ts["tune"]
            n = tune[1] if tune else -1
            report(tune is not None and n > 0 and tune[0] == n,
                   f"{preset}: the slow first choice replaced in every timed problem: {tune}")
            step1 = hs["calls"].get(0, 0) // 4
            want0 = step1 + 4 * n
            got = ts["calls"]
            report(hs["calls"].get(0, 0) == 4 * step1 and got.get(0) == want0 and
                   got.get(1, 0) + got.get(2, 0) >= 3 * step1 + 8 * n,
                   f"{preset}: calls per algorithm {got}: the first choice {want0} times "
                   f"(step 1: {step1}, timing: 4 x {n}), the others the 3 later steps "
                   f"({3 * step1}) and their timing (8 x {n})")

        # 3. deterministic keeps the first choice; timed with it is refused
        d = train(anvil, tmp, shards, f"{preset}-d", preset, ["train.deterministic=true"], {},
                  steps=2)
        if d["rc"] != 0:
            failed(f"{preset}: deterministic", d)
        else:
            report(d["tune"] is None and "matmul algorithms timed" not in d["stdout"] and
                   set(d["calls"]) == {0},
                   f"{preset}: train.deterministic: nothing timed, the first choice only "
                   f"({d['calls']})")
        c = train(anvil, tmp, shards, f"{preset}-c", preset,
                  ["train.deterministic=true", "train.matmul_algo=timed"], {}, steps=2)
        lines = c["stderr"].strip().splitlines()
        report(c["rc"] == 2 and len(lines) == 1 and "train.matmul_algo" in lines[0] and
               "train.deterministic" in lines[0],
               f"{preset}: timed with deterministic refused: exit {c['rc']}, "
               f"{c['stderr'].strip()!r}")
    subprocess.run(["rm", "-rf", tmp])
    sys.exit(summary())


if __name__ == "__main__":
    main()
