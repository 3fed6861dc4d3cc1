#!/usr/bin/env python3
"""mpi suite (tests/emu): device=cuda training does not depend on when the GPU runs its
queued work: every stream wait and host synchronization it needs is there.

usage: python3 test_streams.py ANVIL_EMULATED   (the first python3 on the PATH; standard
library only; mpiexec on the PATH, OMPI_ALLOW_RUN_AS_ROOT* set by meson as root)

By default the emulation carries out each launch, copy and NCCL call when it is made
(EMU_STREAMS=sync), which hides ordering bugs. EMU_STREAMS=lazy carries work out only
when something waits for it (a missing wait on the NCCL stream's result, or a host read
of a result before its synchronization, then sees the old contents); EMU_STREAMS=mixed
keeps the compute stream lazy and runs the NCCL streams at once (a collective that does
not wait for the kernels making its input then reads the old contents):
tests/emu/emu_stream.cc. Work cannot change its arithmetic with the order, so every
layout below must end with the same final fp32 weights (run.final_weights, byte for
byte) and the same losses under lazy and mixed as under sync: 1 rank (with checkpoints
written from a background thread, and a profiled step; and llama with
train.deterministic and selective recompute), dp2 + ZeRO-1, dp2 with buckets
overlapped with the backward, tp2 (both families), dp2 x pp2 with ZeRO-1, buckets and
full recompute; and a run resumed from its step-2 checkpoint must end where the
uninterrupted one did. Checked by deleting each of comm_nccl.c's two stream waits: the
compute stream's wait for a collective changes the result under lazy, the NCCL
stream's wait for the compute stream under mixed; and the deterministic embedding
gradient's wait for the tokens it copies back (encoder.cu) under lazy (docs/perf.md).
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402
from corpus import prepare_corpus  # noqa: E402

GPT2 = ["model.preset=gpt2-tiny"]
LLAMA = ["model.preset=llama-tiny", "model.n_kv_head=2", "model.tie_embeddings=false"]
CASES = [  # name, ranks, overrides, resume from step 2
    ("gpt2 1 rank", 1, GPT2 + ["checkpoint.every=2", "checkpoint.async=true",
                               "run.profile_step=2"], True),
    ("gpt2 dp2+zero1", 2, GPT2 + ["parallel.dp=2", "parallel.zero=1", "checkpoint.every=2"],
     True),
    # head size 32 (tensor-core attention), train.deterministic (the embedding gradient
    # from position lists the host makes from the tokens it copies back)
    ("llama 1 rank", 1, LLAMA + ["model.d_model=64", "model.n_head=2",
                                 "train.deterministic=true", "train.recompute=selective"],
     False),
    ("gpt2 dp2+buckets", 2, GPT2 + ["parallel.dp=2", "parallel.bucket_mb=0.001"], False),
    ("gpt2 tp2", 2, GPT2 + ["parallel.tp=2"], False),
    ("llama tp2", 2, LLAMA + ["parallel.tp=2"], False),
    ("gpt2 dp2xpp2", 4, GPT2 + ["parallel.dp=2", "parallel.pp=2", "parallel.zero=1",
                                "parallel.bucket_mb=0.001", "train.recompute=full"], False),
]
MODES = ["sync", "lazy", "mixed"]


def train(anvil, ranks, args, run_dir, mode):
    cmd = [anvil, "train"] + args + ["device=cuda", f"run.dir={run_dir}",
                                     f"run.final_weights={run_dir}/w.bin"]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe"] + cmd
    env = dict(os.environ, EMU_STREAMS=mode, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {p.stderr.strip()[-600:]}"
    with open(os.path.join(run_dir, "w.bin"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    losses = [r[k] for r in recs for k in ("loss", "val_loss") if k in r]
    return (digest, losses), ""


def main():
    anvil = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        shards = prepare_corpus(anvil, tmp)
        common = [f"data.train={shards}", f"data.val={shards}", "train.steps=3",
                  "train.eval_every=3", "train.eval_tokens=320", "train.seq_len=32",
                  "train.micro_batch=2", "train.global_batch_tokens=512", "train.lr=0.003",
                  "train.warmup_steps=2", "optim.grad_clip=0.5"]
        for name, ranks, args, resume in CASES:
            tag = name.replace(" ", "-")
            ref = None
            for mode in MODES:
                d = os.path.join(tmp, f"{tag}-{mode}")
                got, err = train(anvil, ranks, common + args, d, mode)
                if got is None:
                    report(False, f"{name}, EMU_STREAMS={mode}: {err}")
                    continue
                if mode == "sync":
                    ref = got
                    report(len(got[1]) == 4, f"{name}, sync: 3 steps and the validation "
                           f"loss trained (final weights {got[0][:12]})")
                elif ref is not None:
                    report(got == ref, f"{name}, {mode}: final weights {got[0][:12]} and "
                           f"losses as under sync ({ref[0][:12]})")
                if resume:
                    r = os.path.join(tmp, f"{tag}-{mode}-resumed")
                    ck = os.path.join(d, "checkpoints", "step_00000002")
                    res, err = train(anvil, ranks, common + args + [
                        f"checkpoint.resume={ck}"], r, mode)
                    report(res is not None and got is not None and res[0] == got[0],
                           f"{name}, {mode}: resumed from step 2, final weights "
                           f"{res[0][:12] if res else err} as uninterrupted")
    return summary("streams")


if __name__ == "__main__":
    sys.exit(main())
