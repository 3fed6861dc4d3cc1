#!/usr/bin/env bash
# e2e: SIGINT / SIGTERM / SIGUSR1 stop training after the current step with exit code 75,
# metrics.jsonl holds only complete, parseable lines (one per finished step), and the
# state after the last step is a committed checkpoint.
# Uses the pyenv python3 only to parse metrics.jsonl (standard library).
set -uo pipefail
anvil=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 -c "import sys; open(sys.argv[1],'w').write('the quick brown fox jumps over the lazy dog. ' * 400)" "$dir/t.txt"
"$anvil" prepare text --out "$dir/data" --val-frac 0 "$dir/t.txt" >/dev/null || exit 1
fail=0
for sig in INT TERM USR1; do
    run="$dir/run-$sig"
    "$anvil" train model.preset=llama-tiny data.train="$dir/data/train_*.bin" data.val= \
        train.seq_len=32 train.micro_batch=2 train.steps=100000 run.dir="$run" \
        >"$dir/log-$sig" 2>&1 &
    pid=$!
    for _ in $(seq 100); do   # wait (up to 10 s) until a few steps are logged
        [ -f "$run/metrics.jsonl" ] && [ "$(wc -l < "$run/metrics.jsonl")" -ge 3 ] && break
        sleep 0.1
    done
    kill -s "$sig" $pid
    wait $pid
    rc=$?
    if python3 - "$run/metrics.jsonl" <<'PY'
import json, os, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in recs if "loss" in r]
assert rows and [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "steps not 1..n"
assert len(rows) < 100000, "ran to the end"
# the state after the last step is committed, and its save logged
n = len(rows)
ck = os.path.join(os.path.dirname(sys.argv[1]), "checkpoints")
assert open(os.path.join(ck, "latest")).read() == f"step_{n:08d}\n", "latest"
assert os.path.isfile(os.path.join(ck, f"step_{n:08d}", "MANIFEST")), "not committed"
assert [r["step"] for r in recs if "checkpoint_s" in r] == [n], "save not logged"
PY
    then parsed=1; else parsed=0; fi
    if [ $rc -eq 75 ] && [ $parsed -eq 1 ] && grep -q "stopped by signal" "$dir/log-$sig"; then
        echo "ok   SIG$sig: exit 75, complete steps logged, the last one's checkpoint committed"
    else
        echo "FAIL SIG$sig: exit $rc, metrics parsed=$parsed"; tail -3 "$dir/log-$sig"; fail=1
    fi
done
exit $fail
