#!/usr/bin/env python3
"""e2e suite: run.profile_step times every op of one step and prints the table.

For a tiny model of each family, 3 steps of 2 micro-batches with run.profile_step=2:
- the table is printed once, for step 2, and written to run.dir/profile_step2_rank0.txt
  with the same text;
- the calls per op are what the model's structure gives, counted here from the config:
  matmul_forward and matmul_backward M (P L + 1) (P = 4 matmuls per layer: the stacked
  q, k, v, then o, then fc and proj (GPT-2) or the stacked gate, up and down (Llama);
  plus the head),
  attention_forward / _backward M L, crossentropy_fused M (training at tp 1: loss and
  gradient in one op), adamw_update 1 (M = 2
  micro-batches, L layers);
- the times add up: every op's time >= 0, the rows sum to the ops' total, which is no
  more than the span from the first op to the last, which is no more than the step's
  wall time that train.c measures on its own (metrics.jsonl ms_per_step);
- run.profile_step=-1 is refused (exit 2, one line naming the key); a profile_step past
  train.steps prints no table.
With --device cuda (anvil_emulated: the host emulation of tests/emu) the stamps are the
cuda backend's events. Runs with the first python3 on the PATH (standard library only).
usage: python3 test_profile.py /path/to/anvil [--device cuda]
"""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402
from corpus import prepare_corpus  # noqa: E402

FAMILIES = {
    "gpt2": (["model.preset=gpt2-tiny"], 4),
    "llama": (["model.preset=llama-tiny", "model.n_kv_head=2"], 4),
}
M, B, T, STEPS, PROFILED = 2, 4, 32, 3, 2


def layers(anvil, args):
    """n_layer of the effective config (anvil config prints it)."""
    p = subprocess.run([anvil, "config"] + args, capture_output=True, text=True, check=True)
    m = re.search(r"^\s*n_layer:\s*(\d+)", p.stdout, re.M)
    return int(m.group(1))


def table(text):
    """(header match, rows [(ms, calls, name)]) of the profile block in text."""
    lines = text.splitlines()
    head = [i for i, l in enumerate(lines) if l.startswith("profile of step")]
    if len(head) != 1:
        return None, [], head
    h = re.match(r"profile of step (\d+), rank 0 of 1 \((\w+)\): (\d+) ops, ([\d.]+) ms in ops "
                 r"of a ([\d.]+) ms span", lines[head[0]])
    rows = []
    for line in lines[head[0] + 2:]:
        m = re.match(r"\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(.+)$", line)
        if not m:
            break
        rows.append((float(m.group(1)), int(m.group(3)), m.group(6)))
    return h, rows, head


def calls(rows, prefix):
    return sum(c for _, c, name in rows if name.split(" ")[0] == prefix)


def main():
    anvil = os.path.abspath(sys.argv[1])
    device = ["device=cuda"] if sys.argv[2:] == ["--device", "cuda"] else []
    with tempfile.TemporaryDirectory() as tmp:
        common = device + [f"data.train={prepare_corpus(anvil, tmp, 3000)}", "data.val=",
                           f"train.seq_len={T}", f"train.micro_batch={B}",
                           f"train.global_batch_tokens={M * B * T}", f"train.steps={STEPS}"]
        for fam, (args, per_layer) in FAMILIES.items():
            run_dir = os.path.join(tmp, fam)
            L = layers(anvil, args + common)
            p = subprocess.run([anvil, "train"] + args + common +
                               [f"run.dir={run_dir}", f"run.profile_step={PROFILED}"],
                               capture_output=True, text=True)
            h, rows, heads = table(p.stdout)
            if p.returncode != 0 or h is None:
                report(False, f"{fam}: exit {p.returncode}, {len(heads)} profile headers\n"
                              f"{p.stdout}{p.stderr}")
                continue
            path = os.path.join(run_dir, f"profile_step{PROFILED}_rank0.txt")
            block = "\n".join(l for l in p.stdout.splitlines()
                              if l.startswith("profile of step") or re.match(r"\s+(ms|[\d.]+) ", l))
            same_file = os.path.exists(path) and open(path).read().strip() == block.strip()
            want = {"matmul_forward": M * (per_layer * L + 1),
                    "matmul_backward": M * (per_layer * L + 1),
                    "attention_forward": M * L, "attention_backward": M * L,
                    "crossentropy_fused": M, "adamw_update": 1}
            got = {k: calls(rows, k) for k in want}
            n_ops, ops_ms, span = int(h.group(3)), float(h.group(4)), float(h.group(5))
            step_ms = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))
                       if '"step"' in l and '"loss"' in l]
            wall = [s["ms_per_step"] for s in step_ms if s["step"] == PROFILED]
            sum_rows = sum(ms for ms, _, _ in rows)
            times_ok = (all(ms >= 0 for ms, _, _ in rows) and abs(sum_rows - ops_ms) <=
                        0.001 * len(rows) + 1e-6 and ops_ms <= span + 0.002 and
                        len(wall) == 1 and span <= wall[0] + 0.01)
            ok = (h.group(1) == str(PROFILED) and got == want and
                  sum(c for _, c, _ in rows) == n_ops and same_file and times_ok and
                  h.group(2) == ("cuda" if device else "cpu"))
            report(ok, f"{fam} (L={L}, {M} micro-batches, {h.group(2)}): {n_ops} ops timed in "
                       f"step {h.group(1)}, calls {got} (want {want}); rows sum {sum_rows:.3f} "
                       f"= ops {ops_ms:.3f} <= span {span:.3f} <= step wall "
                       f"{wall[0] if wall else '?'} ms: {times_ok}; file same as stdout: "
                       f"{same_file}")

        p = subprocess.run([anvil, "train"] + common + ["run.profile_step=-1",
                                                        f"run.dir={tmp}/bad"],
                           capture_output=True, text=True)
        err = p.stderr.strip().splitlines()
        report(p.returncode == 2 and len(err) == 1 and "run.profile_step" in err[0],
               f"run.profile_step=-1: exit {p.returncode}, stderr {err}")
        p = subprocess.run([anvil, "train"] + FAMILIES["gpt2"][0] + common +
                           [f"run.profile_step={STEPS + 1}", f"run.dir={tmp}/past"],
                           capture_output=True, text=True)
        report(p.returncode == 0 and "profile of step" not in p.stdout,
               f"run.profile_step past train.steps: exit {p.returncode}, no table")
    return summary(f"profile{' (device=cuda)' if device else ''}")


if __name__ == "__main__":
    sys.exit(main())
