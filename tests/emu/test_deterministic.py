#!/usr/bin/env python3
"""unit suite (tests/emu): train.deterministic makes device=cuda runs bit-identical.

usage: python3 test_deterministic.py ANVIL_EMULATED   (the first python3 on the PATH;
standard library only)

On a GPU the blocks of a kernel run in no fixed order; the emulation imitates that with
EMU_SCHEDULE=random (tests/emu/emu_cuda.cc), a different order for every seed. For both
families (head size 32, so that attention takes the tensor-core kernels, whose dQ is
summed with atomics unless deterministic; T=256, 4 key tiles adding into each dQ tile),
4 steps are trained twice with different
seeds: with train.deterministic=true the final weights (run.final_weights, fp32) must be
the same bytes, and the losses the same; without it they must differ (the atomics'
order shows), which is what makes the first check mean something.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402
from corpus import prepare_corpus  # noqa: E402
from emu_tiny import tiny_cuda_args, tiny_results  # noqa: E402


def train(anvil, tmp, shards, name, preset, det, seed):
    d = os.path.join(tmp, name)
    args = tiny_cuda_args(anvil, preset, shards, d, 4, 256, 1024) + [
        "train.sample_every=0", "train.eval_every=0",
        f"train.deterministic={'true' if det else 'false'}"]
    env = dict(os.environ, EMU_SCHEDULE="random", EMU_SEED=str(seed))
    p = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None, None, p.stderr.strip()[-400:]
    weights, losses, _ = tiny_results(d)
    return weights, losses, ""


def main():
    anvil = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="anvil-det-")
    shards = prepare_corpus(anvil, tmp)
    for preset in ("gpt2-tiny", "llama-tiny"):
        for det in (True, False):
            tag = f"{preset} deterministic={'true' if det else 'false'}"
            a = train(anvil, tmp, shards, f"{preset}-{det}-a", preset, det, 1)
            b = train(anvil, tmp, shards, f"{preset}-{det}-b", preset, det, 2)
            if a[0] is None or b[0] is None:
                report(False, f"{tag}: a run failed: {a[2] or b[2]}")
                continue
            same = a[0] == b[0]
            if det:
                report(same and a[1] == b[1] and len(a[1]) == 4,
                       f"{tag}: two block orders, final weights {'identical' if same else 'DIFFER'}"
                       f" ({len(a[0])} bytes), losses {a[1]} vs {b[1]}")
            else:
                report(not same, f"{tag}: two block orders, final weights "
                       f"{'differ, as fp32 atomics make them' if not same else 'IDENTICAL (the check above proves nothing)'}")
    subprocess.run(["rm", "-rf", tmp])
    sys.exit(summary())


if __name__ == "__main__":
    main()
