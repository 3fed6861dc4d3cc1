#!/usr/bin/env bash
# tests/bench/ckpt_bench.sh: checkpoint save and load throughput (a benchmark, not a test).
#
# Saves and loads a GPT-2 124M checkpoint with its AdamW state (~1.5 GB, one rank) and
# measures, in the same run and on the same disk, taking turns (REPS=3 times, medians),
# the raw speed of `dd` writing the same number of bytes with conv=fsync and reading
# them back, through the page cache and with O_DIRECT (the raw figure is the faster of
# the two; anvil itself writes and reads tensor data with O_DIRECT) (from the page cache
# unless /proc/sys/vm/drop_caches is writable, in which case caches are dropped first;
# the output says which). Then the same save with checkpoint.async=true: the time the
# training loop is blocked per checkpoint. With --write, appends the rows to
# docs/perf.md.
#   usage: [REPS=3] [CHECKSUM=crc32c|sha256] bash tests/bench/ckpt_bench.sh [--write] [DIR]   (DIR: where to write, on
#          the disk to measure; default runs/ckpt-bench)
set -euo pipefail
cd "$(dirname "$0")/../.."
write=0
[ "${1:-}" = --write ] && { write=1; shift; }
dir=${1:-runs/ckpt-bench}
anvil=./build/anvil
[ -x $anvil ] || bash launch/setup.sh
[ -f runs/data/fortunes/train_000000.bin ] || {
    mapfile -t files < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.*' | sort)
    $anvil prepare text --out runs/data/fortunes --doc-sep % "${files[@]}"; }
rm -rf "$dir"; mkdir -p "$dir"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
machine="$(nproc) cores, $cpu, $(free -g | awk '/Mem:/{print $2}') GiB, $(df -h "$dir" | awk 'NR==2{print $1}')"
date=$(date -u +%Y-%m-%d)
drop() { sync; if [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo cold; else echo "page cache"; fi; }
checksum=${CHECKSUM:-crc32c}   # checkpoint.checksum: crc32c or sha256
args=(model.preset=gpt2-124m train.seq_len=64 train.micro_batch=1 data.val= checkpoint.checksum=$checksum
      "data.train=runs/data/fortunes/train_*.bin" train.log_every=1000)

# The disk of a shared VM varies a lot from minute to minute, so anvil and dd take
# turns, REPS times, and the medians are compared.
timed() { python3 -c 'import subprocess, sys, time
t = time.time(); subprocess.run(sys.argv[1:], check=True); print(time.time() - t)' "$@"; }
median() { python3 -c 'import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
reps=${REPS:-3}
saves=(); loads=(); verifies=(); reads=(); ddws=(); ddrs=(); ddwds=(); ddrds=()
for rep in $(seq "$reps"); do
    # save: the checkpoint at the end of a 1-step run; load: the same command again
    rm -rf "$dir/sync"
    $anvil train "${args[@]}" train.steps=1 run.dir="$dir/sync" > "$dir/save.log"
    saves+=("$(sed -n 's/^checkpoint step 1 saved: \([0-9.]*\) s.*/\1/p' "$dir/save.log")")
    bytes=$(du -sb "$dir/sync/checkpoints/step_00000001" | cut -f1)
    cache=$(drop)
    $anvil train "${args[@]}" train.steps=1 run.dir="$dir/sync" > "$dir/load.log"
    read -r l v r < <(sed -n 's/^checkpoint loaded in \([0-9.]*\) s (finding it \([0-9.]*\) s, reading and checking the tensors \([0-9.]*\) s)/\1 \2 \3/p' "$dir/load.log")
    loads+=("$l"); verifies+=("$v"); reads+=("$r")
    # raw disk: the same bytes with dd
    mb=$(( (bytes + 1048575) / 1048576 ))
    ddws+=("$(timed dd if=/dev/zero of="$dir/dd.bin" bs=1M count=$mb conv=fsync status=none)")
    dd_cache=$(drop)
    ddrs+=("$(timed dd if="$dir/dd.bin" of=/dev/null bs=1M status=none)")
    rm -f "$dir/dd.bin"
    # and without the page cache, as anvil writes and reads (O_DIRECT, 2 MiB blocks)
    ddwds+=("$(timed dd if=/dev/zero of="$dir/dd.bin" bs=2M count=$(( (mb + 1) / 2 )) oflag=direct conv=fsync status=none)")
    drop > /dev/null
    ddrds+=("$(timed dd if="$dir/dd.bin" of=/dev/null bs=2M iflag=direct status=none)")
    rm -f "$dir/dd.bin"
done
save_s=$(median "${saves[@]}"); load_s=$(median "${loads[@]}")
verify_s=$(median "${verifies[@]}"); read_s=$(median "${reads[@]}")
dd_w=$(median "${ddws[@]}"); dd_r=$(median "${ddrs[@]}")
dd_wd=$(median "${ddwds[@]}"); dd_rd=$(median "${ddrds[@]}")
echo "save s: ${saves[*]} | dd write s: ${ddws[*]} | direct: ${ddwds[*]} | load s: ${loads[*]} | dd read s: ${ddrs[*]} | direct: ${ddrds[*]}"

# async: checkpoints at steps 1..3 while training, the last one (4) synchronous
$anvil train "${args[@]}" train.steps=4 checkpoint.every=1 checkpoint.async=true \
    checkpoint.keep=2 run.dir="$dir/async" > "$dir/async.log"
read -r async_blocked async_total sync_blocked < <(python3 - "$dir/async/metrics.jsonl" <<'PY'
import json, statistics, sys
c = [json.loads(l) for l in open(sys.argv[1]) if "checkpoint_blocked_s" in l]
a = [r for r in c if r["step"] < 4]
print(statistics.median(r["checkpoint_blocked_s"] for r in a),
      statistics.median(r["checkpoint_s"] for r in a), c[-1]["checkpoint_blocked_s"])
PY
)
rm -rf "$dir"
python3 - "$date" "$machine" "$bytes" "$save_s" "$load_s" "$verify_s" "$read_s" "$dd_w" \
    "$dd_r" "$cache" "$dd_cache" "$async_blocked" "$async_total" "$sync_blocked" "$reps" "$checksum" \
    "$dd_wd" "$dd_rd" \
    > /tmp/ckpt_bench_rows <<'PY'
import sys
(date, machine, b, save, load, verify, read, ddw, ddr, cache, ddcache, ab, at, sb, reps, checksum,
 ddwd, ddrd) = sys.argv[1:]
b = int(b); mb = b / 1e6
f = lambda x: float(x)
rows = [
 # the raw disk is the faster of dd through the page cache and dd with O_DIRECT
 f"| {date} | save, GPT-2 124M + AdamW ({mb:.0f} MB), sync, CHECKSUM, median of REPS | {f(save):.2f} s | {mb/f(save):.0f} MB/s | dd write+fsync {mb/f(ddw):.0f} MB/s, O_DIRECT {mb/f(ddwd):.0f} MB/s | {100*min(f(ddw), f(ddwd))/f(save):.0f}% | {machine} |",
 f"| {date} | load, median of REPS (find {f(verify):.2f} s + read and verify {f(read):.2f} s, {cache}) | {f(load):.2f} s | {mb/f(load):.0f} MB/s | dd read {mb/f(ddr):.0f} MB/s ({ddcache}), O_DIRECT {mb/f(ddrd):.0f} MB/s | {100*min(f(ddr), f(ddrd))/f(load):.0f}% | {machine} |",
 f"| {date} | async save: training blocked (median of 3) | {f(ab):.2f} s | save took {f(at):.2f} s in the background | sync save blocked {f(sb):.2f} s | | {machine} |",
]
print("\n".join(r.replace("REPS", reps).replace("CHECKSUM", checksum) for r in rows))
PY
echo "| date | what | time | throughput | raw disk (same run) | anvil / raw | machine |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
cat /tmp/ckpt_bench_rows
if [ $write = 1 ]; then
    cat /tmp/ckpt_bench_rows >> docs/perf.md
    echo "appended to docs/perf.md"
fi
