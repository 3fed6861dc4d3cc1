#!/usr/bin/env bash
# e2e: overfitting one fixed batch drives the training loss under 0.05 within a few
# hundred steps, for both families. The shard holds exactly one global batch of windows
# and the order is sequential, so every step sees the same batch. This exercises the
# whole path: prepare -> shard -> loader -> model -> backward -> AdamW -> metrics.jsonl.
# Uses the pyenv python3 only to read metrics.jsonl (standard library).
set -euo pipefail
anvil=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

B=4; T=64
# exactly B*T bytes of English text: prepare appends one end-of-text token, giving
# B*T+1 tokens = B windows of T+1.
python3 - "$dir/text.txt" $((B * T)) <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
text = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
        "incredulity, it was the season of Light, it was the season of Darkness. ") * 4
open(path, "w").write(text[:n])
PY
"$anvil" prepare text --out "$dir/data" --val-frac 0 "$dir/text.txt" >/dev/null

fail=0
for family in gpt2 llama; do
    run="$dir/run-$family"
    "$anvil" train model.preset=$family-tiny data.train="$dir/data/train_*.bin" data.val= \
        data.order=sequential train.seq_len=$T train.micro_batch=$B train.steps=300 \
        train.lr=3e-3 train.min_lr=3e-3 train.warmup_steps=10 train.schedule=constant \
        optim.weight_decay=0 train.log_every=100 run.dir="$run" >"$dir/log-$family" 2>&1 || {
        echo "FAIL $family: anvil train exited $?"; cat "$dir/log-$family"; fail=1; continue; }
    python3 - "$run/metrics.jsonl" "$family" <<'PY' || fail=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
first, last = rows[0]["loss"], rows[-1]["loss"]
best = min((r["step"] for r in rows if r["loss"] < 0.05), default=None)
ok = last < 0.05 and best is not None
print(f"{'ok  ' if ok else 'FAIL'} {sys.argv[2]}: loss {first:.3f} -> {last:.4f} "
      f"after {rows[-1]['step']} steps (first under 0.05 at step {best})")
sys.exit(0 if ok else 1)
PY
done
exit $fail
