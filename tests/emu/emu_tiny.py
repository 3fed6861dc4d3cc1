"""tests/emu/emu_tiny.py: the tiny device=cuda training run that test_deterministic.py and
test_matmul_algo.py share (imported from this folder, each test's own): its command
line, and what it leaves behind. Standard library only."""
import os
import re


def tiny_cuda_args(anvil, preset, shards, d, steps, seq_len, tokens):
    """`anvil train` of PRESET at 64 channels and 2 heads (head size 32: the tensor-core
    attention; Llama with 1 kv head), vocabulary 257, micro-batch 2, TOKENS per step,
    no validation, run.dir D, the fp32 master weights to D.weights, no final checkpoint."""
    return [anvil, "train", f"model.preset={preset}", "model.vocab_size=257",
            "model.d_model=64", "model.n_head=2",
            "model.n_kv_head=" + ("1" if preset.startswith("llama") else "2"),
            f"data.train={shards}", "data.val=", f"train.steps={steps}",
            f"train.seq_len={seq_len}", "train.micro_batch=2",
            f"train.global_batch_tokens={tokens}", "device=cuda", f"run.dir={d}",
            "checkpoint.final=false", f"run.final_weights={d}.weights"]


def tiny_results(d):
    """(final weights as bytes, losses, validation losses) of the run at D, the losses as
    metrics.jsonl prints them (strings, compared exactly)."""
    with open(f"{d}.weights", "rb") as f:
        weights = f.read()
    with open(os.path.join(d, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    losses = [re.search(r'"loss": ([^,}]+)', l).group(1) for l in lines if '"loss"' in l]
    val = [re.search(r'"val_loss": ([^,}]+)', l).group(1) for l in lines if '"val_loss"' in l]
    return weights, losses, val
