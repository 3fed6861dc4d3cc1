#!/usr/bin/env python3
"""unit suite (tests/emu): the memory plan `anvil train` prints (and `anvil plan`, and
gpu_bench.sh's choice of micro-batch, rely on) against what the cuda backend really
allocates, counted by the emulation's device (tests/emu/emu_cuda.cc).

usage: python3 test_plan_memory.py ANVIL_EMULATED   (the first python3 on the PATH;
standard library only)

For GPT-2 and Llama shapes (small, so that the emulation is quick), each recompute
mode, activations 85% of the plan (B=8, T=256), and a vocabulary of 65600 whose rows do not fit shared memory (Llama: the
cross-entropy's three-kernel path and its scratch), one training step with
device=cuda; EMU_REPORT_DEVICE_PEAK=1 makes the emulation print the peak of the bytes
allocated. The plan counts parameters, gradients, optimizer state and activations, and
leaves to its 1.5 GiB margin the cuBLASLt workspace (32 MiB) and the backend's small
scratch buffers (matmul bias-gradient partials, AdamW partials and segment tables,
cross-entropy statistics). So: plan + 32 MiB <= peak <= plan + 32 MiB + 0.25 MiB + 1%
of the plan, the plan read from its printed figure (0.1 MiB resolution). An activation or scratch buffer the plan
forgets, or one it counts but the model never allocates, fails the check once it is
more than that. Then a device too small for the plan (EMU_DEVICE_MIB) is refused before
anything is allocated: exit 2, one line.
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402
from corpus import prepare_corpus  # noqa: E402

WORKSPACE_MIB = 32.0        # CUDA_LT_WORKSPACE_BYTES, kernels/cuda/backend.cu
SCRATCH_MIB = 0.25          # the scratch buffers: at most this + 1% of the plan
SCRATCH_SHARE = 0.01
ROUND_MIB = 0.05            # the plan prints 0.1 MiB (or 0.01 GiB) steps


def mib(text):
    v, unit = text.split()
    return float(v) * (1024.0 if unit == "GiB" else 1.0)


def run(anvil, args, env_extra, cwd):
    env = dict(os.environ, **env_extra)
    return subprocess.run([anvil] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def main():
    anvil = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="anvil-plan-")
    shards = prepare_corpus(anvil, tmp)
    cases = [("gpt2-tiny", 257, "none", 4, 64), ("gpt2-tiny", 257, "selective", 4, 64),
             ("llama-tiny", 257, "full", 4, 64), ("gpt2-tiny", 257, "none", 8, 256),
             ("llama-tiny", 257, "none", 8, 256),
             ("gpt2-tiny", 65600, "none", 2, 64), ("llama-tiny", 65600, "selective", 2, 64)]
    for i, (preset, vocab, rc, B, T) in enumerate(cases):
        args = ["train", f"model.preset={preset}", f"model.vocab_size={vocab}",
                f"data.train={shards}", "data.val=", "train.steps=1", f"train.seq_len={T}",
                f"train.micro_batch={B}", f"train.global_batch_tokens={2 * B * T}",
                f"train.recompute={rc}", "device=cuda", f"run.dir=r{i}",
                "checkpoint.final=false", "train.sample_every=0", "train.eval_every=0"]
        p = run(anvil, args, {"EMU_REPORT_DEVICE_PEAK": "1"}, tmp)
        plan = re.search(r"^memory per rank \(cuda\): .* = ([0-9.]+ [MG]iB)", p.stdout, re.M)
        peak = re.search(r"^emu: device memory peak (\d+) bytes", p.stderr, re.M)
        name = f"{preset} V={vocab} recompute={rc} B={B} T={T}"
        if p.returncode != 0 or not plan or not peak:
            report(False, f"{name}: exit {p.returncode}, plan {bool(plan)}, peak {bool(peak)}: "
                   f"{p.stderr.strip()[-300:]}")
            continue
        planned, got = mib(plan.group(1)), int(peak.group(1)) / 2**20
        scratch = got - planned - WORKSPACE_MIB
        bound = SCRATCH_MIB + SCRATCH_SHARE * planned
        ok = -ROUND_MIB <= scratch <= bound + ROUND_MIB
        report(ok, f"{name}: planned {planned:.1f} MiB, allocated at peak {got:.2f} MiB = "
               f"plan + {WORKSPACE_MIB:.0f} MiB workspace {scratch:+.2f} MiB (scratch: "
               f"allowed 0 .. {bound:.2f})")

    # a device smaller than the plan plus the margin: refused, nothing trained
    args = ["train", "model.preset=gpt2-tiny", "model.vocab_size=257", f"data.train={shards}",
            "data.val=", "train.steps=1", "train.seq_len=64", "train.micro_batch=4",
            "device=cuda", "run.dir=small"]
    p = run(anvil, args, {"EMU_DEVICE_MIB": "2560"}, tmp)   # 1 GiB context: 1.5 GiB free
    lines = p.stderr.strip().splitlines()
    report(p.returncode == 2 and len(lines) == 1 and "does not fit the device" in lines[0]
           and not os.path.exists(os.path.join(tmp, "small", "metrics.jsonl")),
           f"a 2.5 GiB device (1.5 GiB free, under the margin): exit {p.returncode}, "
           f"{lines[-1] if lines else 'nothing said'}")
    p = run(anvil, args[:-1] + ["run.dir=fits"], {"EMU_DEVICE_MIB": "2700"}, tmp)
    report(p.returncode == 0, f"a 2.64 GiB device (the plan + margin fit): exit {p.returncode}")

    subprocess.run(["rm", "-rf", tmp])
    sys.exit(summary())


if __name__ == "__main__":
    main()
