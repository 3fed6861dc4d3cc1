#!/usr/bin/env python3
"""mpi suite: what anvil does when a step or a rank goes wrong.

1. Non-finite gradients, skipped: under dp2, the test hook ANVIL_TEST_NAN_BATCHES poisons
   one gradient element on world rank 0 for global batches 2 and 3 (steps 2 and 3) (the NaN must travel through
   the dp all-reduce to the other rank). Those steps are skipped by every rank and
   counted (skipped_steps 1 then 2, grad_norm null), the run ends with exit 0, and
   skipping changed nothing else: its final weights equal, bit for bit, those of a run
   whose data has steps 2 and 3's batches cut out and that takes 2 fewer steps (a
   skipped step leaves parameters, moments and AdamW's count untouched), except for
   the learning rate, which follows the step number: so both runs use a constant
   schedule.
2. Rollback: batches 4, 5 and 6 poisoned (the hook is keyed by data position, so the
   batches after the rollback are clean), checkpoint.every=3, rollback_after=3. After
   step 6 the run goes back to step 3's checkpoint and continues with the data after
   step 6's batch. Independent reference: an uninterrupted run (no hook) over the same
   token stream with the windows of steps 4-6 removed, made as two shards (windows
   never cross a shard boundary, so shard A = tokens [0, 3GT] and shard B = tokens
   [6GT, end) give exactly windows 0..3G-1 then 6G, 6G+1, ...), sequential order. Final
   weights must be bit-identical, and metrics.jsonl must hold {"step": 6,
   "rollback_to": 3}.
3. Watchdog: under dp2 the last rank hangs in step 3 (ANVIL_TEST_HANG_AT_STEP); with
   run.watchdog_s=3 the job ends with a non-zero exit well within 60 s, with the line
   "watchdog: rank N made no progress".
With --device cuda every run trains with device=cuda and train.deterministic=true (the
bit-for-bit comparisons need a reduction order that does not vary: on a GPU the
embedding and attention backward otherwise add with float atomics); the emulated
backend runs it (tests/emu: failure_emulated), where the NaN goes through the cuda
backend's gradient norm and the rollback reloads device memory.
Runs with Debian's /usr/bin/python3 (numpy); ranks under mpiexec --oversubscribe.
usage: /usr/bin/python3 test_failure.py /path/to/anvil [--device cuda]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from tensorfile import read_tensorfile  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")
T, B, GB = 32, 2, 512
G = GB // T              # windows per step
fails = 0


def check(ok, what):
    global fails
    fails += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)


DEVICE_ARGS = []   # --device cuda: device=cuda train.deterministic=true


def run(anvil, ranks, args, env=None, timeout=300):
    cmd = [anvil, "train"] + args + DEVICE_ARGS
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe"] + cmd
    t0 = time.time()
    p = subprocess.run(cmd, env=dict(ENV, **(env or {})), capture_output=True, text=True,
                       timeout=timeout)
    p.seconds = time.time() - t0
    return p


def records(d):
    with open(os.path.join(d, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def write_llmc_shard(path, tokens):
    """An llm.c shard (anvil reads them): 256 int32 header, uint16 tokens."""
    hdr = np.zeros(256, dtype=np.int32)
    hdr[0], hdr[1], hdr[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(hdr.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def same_weights(a, b):
    wa, wb = read_tensorfile(a), read_tensorfile(b)
    return set(wa) == set(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa)


def main():
    anvil = os.path.abspath(sys.argv[1])
    if sys.argv[2:] == ["--device", "cuda"]:
        DEVICE_ARGS.extend(["device=cuda", "train.deterministic=true"])
    elif sys.argv[2:]:
        print("usage: test_failure.py ANVIL [--device cuda]", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(7)
        tokens = rng.integers(0, 257, size=40 * G * T + 1)
        full = os.path.join(tmp, "full")
        os.makedirs(full)
        write_llmc_shard(os.path.join(full, "s0.bin"), tokens)
        base = ["data.val=", "data.order=sequential", "model.preset=llama-tiny",
                "model.n_kv_head=2", f"train.seq_len={T}", f"train.micro_batch={B}",
                f"train.global_batch_tokens={GB}", "train.lr=3e-3", "train.log_every=1"]

        # 1. skipped steps leave everything untouched (constant learning rate)
        const = base + ["train.schedule=constant", "train.warmup_steps=0"]
        d = os.path.join(tmp, "skip")
        p = run(anvil, 2, const + [f"data.train={full}/s0.bin", "train.steps=6",
                                   "parallel.dp=2", "checkpoint.rollback_after=0",
                                   f"run.dir={d}", f"run.final_weights={d}/w.bin"],
                env={"ANVIL_TEST_NAN_BATCHES": "2,3"})
        recs = [r for r in records(d) if "loss" in r] if p.returncode == 0 else []
        ok = (p.returncode == 0 and len(recs) == 6 and
              [r["skipped_steps"] for r in recs] == [0, 1, 2, 2, 2, 2] and
              recs[1]["grad_norm"] is None and recs[2]["grad_norm"] is None and
              all(r["grad_norm"] is not None for r in recs[3:]))
        check(ok, f"dp2, NaN gradient on rank 0 at steps 2 and 3: skipped on every rank and "
                  f"counted (exit {p.returncode})")
        cut = os.path.join(tmp, "cut1")
        os.makedirs(cut)
        write_llmc_shard(os.path.join(cut, "a.bin"), tokens[:1 * G * T + 1])
        write_llmc_shard(os.path.join(cut, "b.bin"), tokens[3 * G * T:])
        r = os.path.join(tmp, "skip-ref")
        q = run(anvil, 2, const + [f"data.train={cut}/*.bin", "train.steps=4", "parallel.dp=2",
                                   f"run.dir={r}", f"run.final_weights={r}/w.bin"])
        check(q.returncode == 0 and p.returncode == 0 and
              same_weights(f"{d}/w.bin", f"{r}/w.bin"),
              "the skipped steps changed nothing: weights equal a run without their batches")

        # 2. rollback to the last checkpoint, on with the data after the bad batches
        d = os.path.join(tmp, "rollback")
        p = run(anvil, 1, base + [f"data.train={full}/s0.bin", "train.steps=10",
                                  "checkpoint.every=3", "checkpoint.rollback_after=3",
                                  f"run.dir={d}", f"run.final_weights={d}/w.bin"],
                env={"ANVIL_TEST_NAN_BATCHES": "4,5,6"})
        ok = p.returncode == 0 and {"step": 6, "rollback_to": 3} in records(d)
        check(ok, f"3 NaN steps in a row: rolled back to step 3 (exit {p.returncode}; "
                  f"{[l for l in p.stderr.splitlines() if 'rolled back' in l]})")
        cut = os.path.join(tmp, "cut2")
        os.makedirs(cut)
        write_llmc_shard(os.path.join(cut, "a.bin"), tokens[:3 * G * T + 1])
        write_llmc_shard(os.path.join(cut, "b.bin"), tokens[6 * G * T:])
        r = os.path.join(tmp, "rollback-ref")
        q = run(anvil, 1, base + [f"data.train={cut}/*.bin", "train.steps=10",
                                  f"run.dir={r}", f"run.final_weights={r}/w.bin"])
        check(q.returncode == 0 and p.returncode == 0 and
              same_weights(f"{d}/w.bin", f"{r}/w.bin"),
              "after the rollback: weights bit-identical to a run over the data without "
              "steps 4-6's batches")

        # 3. a hung rank: the watchdog ends the job
        d = os.path.join(tmp, "hang")
        p = run(anvil, 2, base + [f"data.train={full}/s0.bin", "train.steps=50",
                                  "parallel.dp=2", "run.watchdog_s=3", f"run.dir={d}"],
                env={"ANVIL_TEST_HANG_AT_STEP": "3"}, timeout=120)
        lines = [l for l in p.stderr.splitlines() if "watchdog: rank" in l]
        check(p.returncode != 0 and p.seconds < 60 and lines and "made no progress" in lines[0],
              f"a rank hangs: the watchdog ends the job in {p.seconds:.0f} s, exit "
              f"{p.returncode}: {lines[0] if lines else '(no watchdog line)'}")
    print(f"failure: {'all passed' if not fails else f'{fails} failed'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
