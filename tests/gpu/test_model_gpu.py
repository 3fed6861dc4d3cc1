#!/usr/bin/env python3
"""gpu suite: the whole model trains the same on the GPU as on the CPU.

For each family (a small GPT-2 and a small Llama with grouped-query heads, untied
head), 20 AdamW steps from the same seed on the same batches (a shard of English
text made here with `anvil prepare text`), once with device=cpu (the fp32 reference)
and once with device=cuda (bf16 weights and activations, fp32 master weights): the
training loss of every step must agree within 1e-2 relative, and the final
validation loss too. Each family runs three times on the GPU: train.recompute none,
selective and full, which must all stay within the bound (recompute reorders nothing
on the cpu, but on the GPU a fused and an unfused norm may round differently).

Skips (exit 77) when anvil refuses device=cuda (no GPU, no driver, a build without
the cuda backend). Standard library only; any python3.

The learning rate is 3e-4 with no warmup, so that the comparison measures the code and
not bf16 itself: a bf16 weight moves only when an update passes half its ulp (1.2e-4
at the init's 0.02), so a warmup's first tiny steps are invisible to the bf16 forward,
and at 1e-3 both models go through loss spikes that amplify any rounding difference.
Measured under tests/emu (the cuda backend emulated on the host), 20 steps: 5e-2 with
lr 1e-3 and 5 warmup steps (gpt2), 3.3e-2 at lr 1e-3 without (llama, a spike), 2.8e-3
(gpt2) and 2.5e-3 (llama) at 3e-4 without.
--steps and --seq-len shrink the run (tests/emu runs 10 steps of 64 tokens).
usage: python3 test_model_gpu.py /path/to/anvil [--steps N] [--seq-len T]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

TOL = 1e-2
STEPS = 20
FAMILIES = {
    # d_model 256 with 4 heads: HS 64, the tensor-core attention path on the GPU
    "gpt2": ["model.family=gpt2", "model.n_layer=2", "model.d_model=256", "model.n_head=4"],
    "llama": ["model.family=llama", "model.n_layer=2", "model.d_model=256", "model.n_head=4",
              "model.n_kv_head=2", "model.tie_embeddings=false"],
}
TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
        "incredulity, it was the season of Light, it was the season of Darkness, it was "
        "the spring of hope, it was the winter of despair. ")


def run(anvil, args, log):
    p = subprocess.run([anvil, "train"] + args, capture_output=True, text=True, timeout=600)
    with open(log, "w") as f:
        f.write(p.stdout + p.stderr)
    return p


def losses(run_dir):
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    train = [r["loss"] for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    return train, val[-1] if val else None


def main():
    anvil = os.path.abspath(sys.argv[1])
    opts = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    steps = int(opts.pop("--steps", STEPS))
    seq_len = int(opts.pop("--seq-len", 128))
    if opts or len(sys.argv) % 2 != 0:
        print("usage: test_model_gpu.py /path/to/anvil [--steps N] [--seq-len T]")
        return 2
    d = tempfile.mkdtemp(prefix="anvil-gpu-model-")
    # 400 documents (JSON lines), so that the validation split gets whole ones
    with open(os.path.join(d, "text.jsonl"), "w") as f:
        for i in range(400):
            f.write(json.dumps({"text": f"{i}: " + TEXT[i % 50:] + TEXT[:i % 50]}) + "\n")
    subprocess.run([anvil, "prepare", "text", "--jsonl", "--out", os.path.join(d, "data"),
                    "--val-frac", "0.05", os.path.join(d, "text.jsonl")], check=True,
                   capture_output=True)
    common = [f"data.train={d}/data/train_*.bin", f"data.val={d}/data/val_*.bin",
              "data.tokenizer=", "model.vocab_size=257", f"train.steps={steps}",
              f"train.seq_len={seq_len}", "train.micro_batch=4",
              f"train.global_batch_tokens={8 * seq_len}",
              # no warmup and a moderate rate: see the top of the file
              "train.lr=3e-4", "train.warmup_steps=0", f"train.eval_every={steps}",
              "train.eval_tokens=2048", "train.sample_every=0", "checkpoint.every=0",
              "checkpoint.resume=none", "train.log_every=5"]
    # Refused: no GPU here (the suite's skip).
    probe = run(anvil, FAMILIES["gpt2"] + common + ["device=cuda", "train.steps=1",
                                                      f"run.dir={d}/probe"], f"{d}/probe.log")
    if probe.returncode == 2 and "device cuda" in probe.stderr:
        print(f"test_model_gpu: skipped: {probe.stderr.strip()}")
        shutil.rmtree(d, ignore_errors=True)
        return 77
    failed = 0
    for fam, shape in FAMILIES.items():
        ref_dir = f"{d}/{fam}-cpu"
        p = run(anvil, shape + common + ["device=cpu", f"run.dir={ref_dir}"], ref_dir + ".log")
        if p.returncode != 0:
            print(f"FAIL {fam} cpu run exited {p.returncode}: {p.stderr[-1500:]}")
            failed += 1
            continue
        ref, ref_val = losses(ref_dir)
        for rc in ("none", "selective", "full"):
            gdir = f"{d}/{fam}-cuda-{rc}"
            p = run(anvil, shape + common + ["device=cuda", f"train.recompute={rc}",
                                              f"run.dir={gdir}"], gdir + ".log")
            if p.returncode != 0:
                print(f"FAIL {fam} cuda recompute={rc} exited {p.returncode}: {p.stderr[-1500:]}")
                failed += 1
                continue
            got, got_val = losses(gdir)
            errs = [abs(a - b) / abs(b) for a, b in zip(got, ref)]
            worst = max(errs) if errs else float("inf")
            verr = abs(got_val - ref_val) / abs(ref_val) if got_val and ref_val else float("inf")
            ok = len(got) == len(ref) == steps and worst <= TOL and verr <= TOL
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {fam} recompute={rc}: {len(got)} steps, loss "
                  f"{ref[0]:.4f} -> {ref[-1]:.4f} (cpu) vs {got[0]:.4f} -> {got[-1]:.4f} "
                  f"(cuda), worst step rel err {worst:.2e}, val {verr:.2e} (tol {TOL:.0e})")
            if not ok:
                print("  cpu :", " ".join(f"{x:.4f}" for x in ref))
                print("  cuda:", " ".join(f"{x:.4f}" for x in got))
    if failed:
        print(f"test_model_gpu: {failed} FAILED (logs in {d})")
        return 1
    shutil.rmtree(d, ignore_errors=True)
    print("test_model_gpu: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
