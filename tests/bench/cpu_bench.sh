#!/usr/bin/env bash
# tests/bench/cpu_bench.sh: CPU training throughput (a benchmark, not a test).
#
# Trains GPT-2 124M at B=4, T=64 and a small GPT-2 (6 layers, 384 channels, 6 heads)
# at the same batch on random-order windows of the default corpus, and reports the
# median ms/step and tokens/s over the steps after the first two (warm-up), with the
# machine and date. With --write, appends the rows to docs/perf.md.
#   usage: bash tests/bench/cpu_bench.sh [--write] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
write=0
[ "${1:-}" = --write ] && { write=1; shift; }
steps=${1:-12}
anvil=./build/anvil
[ -x $anvil ] || bash launch/setup.sh
[ -f runs/data/fortunes/train_000000.bin ] || {
    mapfile -t files < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.*' | sort)
    $anvil prepare text --out runs/data/fortunes --doc-sep % "${files[@]}"; }

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
machine="$(nproc) cores, $cpu, $(free -g | awk '/Mem:/{print $2}') GiB"
date=$(date -u +%Y-%m-%d)
rows=()
bench() {  # name, overrides...
    local name=$1; shift
    local dir; dir=$(mktemp -d)
    local cmd="anvil train model.family=gpt2 $* train.steps=$steps train.log_every=1000 data.val= run.dir=\$(mktemp -d)"
    $anvil train model.family=gpt2 "$@" train.steps=$steps train.log_every=1000 data.val= \
        run.dir="$dir" >/dev/null
    local stats
    stats=$(python3 - "$dir/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][2:]
ms = statistics.median(r["ms_per_step"] for r in rows)
tps = statistics.median(r["tokens_per_s"] for r in rows)
mfu = statistics.median(r["mfu"] for r in rows)
print(f"{ms:.0f} | {tps:.0f} | {100*mfu:.1f}%")
PY
)
    rm -rf "$dir"
    rows+=("| $date | $name | $stats | \`$cmd\` | $machine |")
    echo "${rows[-1]}"
}
echo "| date | model | ms/step | tokens/s | MFU (est. peak) | command | machine |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
bench "GPT-2 124M, B=4 T=64" model.preset=gpt2-124m train.micro_batch=4 train.seq_len=64
bench "GPT-2 6L/384C, B=4 T=64" model.n_layer=6 model.d_model=384 model.n_head=6 \
    model.vocab_size=50257 train.micro_batch=4 train.seq_len=64
if [ $write = 1 ]; then
    printf '%s\n' "${rows[@]}" >> docs/perf.md
    echo "appended to docs/perf.md"
fi
