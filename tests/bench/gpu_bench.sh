#!/usr/bin/env bash
# tests/bench/gpu_bench.sh: anvil against PyTorch on one GPU (a benchmark, not a test).
#
# For GPT-2 124M (configs/gpt2-124m.yaml, T=1024) and the Llama-3.2-1B shape
# (configs/llama-1b.yaml, T=2048), trains STEPS optimizer steps with `anvil train
# device=cuda` and with tests/reference/torch_baseline.py (bf16 autocast, flash SDPA,
# torch.compile, fused AdamW, TF32: the PyTorch trainer a user would pick) on the same
# token shard, in the same order, with the same shapes and hyper-parameters: the
# baseline reads the effective config `anvil config` prints for the run. The first
# WARMUP steps of each run are dropped (torch.compile, cuBLASLt heuristics, allocator);
# over the rest it reports tokens/s (tokens / wall time), ms/step, MFU (anvil's FLOP
# count, trainer/model.c model_flops_per_token, over PEAK_TFLOPS) and peak memory, then
# the ratio anvil / PyTorch against the goals (GPT-2: >= 1.3x PyTorch's tokens/s;
# Llama-1B: >= 50% MFU).
#
# Peak memory is the GPU's memory.used (nvidia-smi, polled every 0.5 s while the run
# lives) minus what was used before it started: it includes the CUDA context and, for
# PyTorch, the caching allocator's reserve, the same way for both. The baseline's
# allocator peak (torch.cuda.max_memory_allocated) is shown beside it.
#
# Data: a synthetic shard per model (Zipf-distributed ids below the model's
# vocabulary, exactly STEPS global batches of windows so no window repeats), written
# by torch_baseline.py --make-shard, unless SHARD_GPT2 / SHARD_LLAMA name real shards
# (files or patterns, anvil's data.train syntax).
#
# anvil writes a checkpoint when a run ends (checkpoint.every=0 still saves the final
# state; about 15 GB for the 1B model with its AdamW moments). That is not part of a
# training step, so the script kills anvil once the last step's metrics line is in
# metrics.jsonl (KEEP_FINAL_CKPT=1 lets it finish). Run directories live in a temporary
# directory that is removed at exit; logs, effective configs, metrics and the result
# table go to $OUT if set (the device runner collects it), else to a kept temp dir.
#
#   usage: [ANVIL=build/anvil] [VAR=value ...] bash tests/bench/gpu_bench.sh [--write]
#          [--only gpt2|llama]
#   VAR (default): PYTHON (python3) STEPS (30) WARMUP (10) MB_GPT2 / MB_LLAMA (auto:
#     the largest micro-batch, a power of two up to MB_MAX_GPT2 (64) / MB_MAX_LLAMA
#     (8), that `anvil plan` says fits the GPU; both trainers use it) GB_GPT2 /
#     GB_LLAMA (tokens per step: 131072 / 65536, or one micro-batch if that is more;
#     a multiple of MB x T) PEAK_TFLOPS (989, H100 dense bf16) SHARD_GPT2 SHARD_LLAMA
#     TORCH_ARGS (extra torch_baseline.py options, e.g. "--compile-mode max-autotune")
#     RUN_TIMEOUT (1800 s per run) KEEP_FINAL_CKPT (0) T_GPT2 (1024) T_LLAMA (2048)
#     EXTRA_GPT2 / EXTRA_LLAMA (more section.key=value overrides, for both trainers)
#     DEVICE (cuda; `DEVICE=cpu` with tiny EXTRA_* shapes checks the plumbing without a GPU)
#     PROFILE_STEP (5: anvil's per-op table of that step, run.profile_step, in
#     $logs/NAME.anvil.log; a warm-up step, so the events do not touch the figures; 0: off)
# --write appends the table, with machine, command and date, to docs/perf.md's
# "GPU training step" section. Exit status: 0 when every run finished, 1 otherwise.
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/../.."
repo=$PWD

write=0
only=
cmdline="bash tests/bench/gpu_bench.sh $*"
while [ $# -gt 0 ]; do
    case $1 in
        --write) write=1 ;;
        --only) only=${2:?--only needs gpt2 or llama}; shift ;;
        *) echo "usage: bash tests/bench/gpu_bench.sh [--write] [--only gpt2|llama]" >&2
           exit 2 ;;
    esac
    shift
done

anvil=${ANVIL:-build/anvil}
if [[ -n ${ANVIL:-} && $anvil != /* && -e $here/$anvil ]]; then anvil=$here/$anvil; fi
[[ $anvil == /* ]] || anvil=$repo/$anvil
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-10}
PROFILE_STEP=${PROFILE_STEP:-5}
MB_GPT2=${MB_GPT2:-auto}
MB_LLAMA=${MB_LLAMA:-auto}
MB_MAX_GPT2=${MB_MAX_GPT2:-64}
MB_MAX_LLAMA=${MB_MAX_LLAMA:-8}
T_GPT2=${T_GPT2:-1024}
T_LLAMA=${T_LLAMA:-2048}
DEVICE=${DEVICE:-cuda}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
KEEP_FINAL_CKPT=${KEEP_FINAL_CKPT:-0}
TORCH_ARGS=${TORCH_ARGS:-}
gpu=${CUDA_VISIBLE_DEVICES:-0}
gpu=${gpu%%,*}

[ -x "$anvil" ] || { echo "gpu_bench: no anvil binary at $anvil (set ANVIL=path)" >&2; exit 2; }
command -v "$PYTHON" >/dev/null || { echo "gpu_bench: no $PYTHON (set PYTHON=)" >&2; exit 2; }
if (( WARMUP >= STEPS )); then echo "gpu_bench: WARMUP must be < STEPS" >&2; exit 2; fi
if (( PROFILE_STEP > WARMUP )); then
    echo "gpu_bench: PROFILE_STEP must be a warm-up step (<= WARMUP), or 0" >&2; exit 2
fi

work=$(mktemp -d -t anvil-gpu-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -n "${OUT:-}" ]; then logs=$OUT/gpu_bench; else logs=$(mktemp -d -t anvil-gpu-bench-logs.XXXXXX); fi
mkdir -p "$logs"
echo "gpu_bench: anvil $anvil, logs in $logs"

# GPU memory in use (MiB) on our GPU, or empty without nvidia-smi.
gpu_mem() {
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$gpu" 2>/dev/null \
        | head -1 | tr -d ' ' || true
}

# run_watched LOG METRICS FINAL_STEP CMD...: run CMD with output in LOG, polling GPU
# memory; with METRICS set (anvil) and KEEP_FINAL_CKPT=0, kill CMD once METRICS holds
# step FINAL_STEP. Writes LOG.status: "rc=N killed=0|1 mem_mib=M" (M: peak minus the
# memory in use before the start, or "n/a").
run_watched() {
    local logf=$1 metrics=$2 final=$3
    shift 3
    local base peak=0 m start=$SECONDS killed=0 rc=0 pid
    base=$(gpu_mem)
    "$@" >"$logf" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        m=$(gpu_mem)
        if [[ $m =~ ^[0-9]+$ ]] && (( m > peak )); then peak=$m; fi
        if [[ -n $metrics && $KEEP_FINAL_CKPT == 0 && -f $metrics ]] &&
            grep -q "^{\"step\": $final, \"loss\"" "$metrics"; then
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
            break
        fi
        if (( SECONDS - start > RUN_TIMEOUT )); then
            echo "gpu_bench: killed after RUN_TIMEOUT=$RUN_TIMEOUT s" >>"$logf"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    wait "$pid" 2>/dev/null || rc=$?   # (no "Killed" notice from the shell)
    local mem=n/a
    if [[ $base =~ ^[0-9]+$ ]] && (( peak > 0 )); then mem=$(( peak > base ? peak - base : 0 )); fi
    echo "rc=$rc killed=$killed mem_mib=$mem" >"$logf.status"
    local how=
    if ((killed)); then how=" (killed after the last step, by design)"; fi
    if [[ $mem != n/a ]]; then mem="+$mem MiB"; fi
    echo "  $(basename "$logf"): exit $rc$how, $(( SECONDS - start )) s, GPU memory $mem"
}

# pick_mb NAME CONFIG T MAX: the largest power of two <= MAX whose memory plan (`anvil
# plan`, with the EXTRA_* overrides) fits the GPU; 0 if none does.
pick_mb() {
    local name=$1 config=$2 T=$3 mb=$4 extra_name=EXTRA_${1^^} extra
    read -r -a extra <<<"${!extra_name:-}"
    while (( mb >= 1 )); do
        if "$anvil" plan "$config" "device=$DEVICE" "train.seq_len=$T" "train.micro_batch=$mb" \
            "train.global_batch_tokens=$((mb * T))" "${extra[@]}" >"$logs/$name.plan.$mb" 2>&1; then
            echo "$mb"
            return
        fi
        mb=$((mb / 2))
    done
    echo 0
}

# MB_* = auto resolved, and GB_* (default: 131072 / 65536 tokens, at least one micro-batch)
resolve_batch() {
    local name=$1 config=$2 T=$3 max=$4 gb0=$5 mbv=MB_${1^^} gbv=GB_${1^^}
    if [[ ${!mbv} == auto ]]; then
        printf -v "$mbv" %s "$(pick_mb "$name" "$config" "$T" "$max")"
        if [[ ${!mbv} == 0 ]]; then
            echo "gpu_bench: $name: no micro-batch fits (see $logs/$name.plan.1)" >&2
            exit 2
        fi
        echo "gpu_bench: $name: micro-batch ${!mbv} (the largest power of two <= $max that anvil plan fits)"
    fi
    local mb=${!mbv}
    if [[ -z ${!gbv:-} ]]; then
        printf -v "$gbv" %s $(( gb0 > mb * T ? gb0 : mb * T ))
    fi
    if (( ${!gbv} % (mb * T) != 0 )); then
        echo "gpu_bench: $gbv=${!gbv} is not a multiple of micro-batch x T = $((mb * T))" >&2
        exit 2
    fi
}
if [[ -z $only || $only == gpt2 ]]; then
    resolve_batch gpt2 configs/gpt2-124m.yaml "$T_GPT2" "$MB_MAX_GPT2" 131072
fi
if [[ -z $only || $only == llama ]]; then
    resolve_batch llama configs/llama-1b.yaml "$T_LLAMA" "$MB_MAX_LLAMA" 65536
fi

# bench NAME LABEL CONFIG T MB GB VOCAB SHARD
bench() {
    local name=$1 label=$2 config=$3 T=$4 mb=$5 gb=$6 vocab=$7 shard=$8
    echo "== $label: B=$mb T=$T, $gb tokens/step, $STEPS steps ($WARMUP warm-up)"
    if [ -z "$shard" ]; then
        shard=$work/$name.bin
        "$PYTHON" tests/reference/torch_baseline.py --make-shard "$shard" \
            --tokens $((STEPS * gb + 1)) --vocab "$vocab"
    fi
    local rundir=$work/run-$name
    local over=("device=$DEVICE" "data.train=$shard" data.val= "train.steps=$STEPS"
                "train.seq_len=$T" "train.micro_batch=$mb" "train.global_batch_tokens=$gb"
                train.log_every=1 train.eval_every=0 train.sample_every=0
                "train.peak_flops=${PEAK_TFLOPS}e12" checkpoint.every=0 checkpoint.final=false
                checkpoint.resume=none "run.dir=$rundir" "run.profile_step=$PROFILE_STEP")
    local extra_name=EXTRA_${name^^} extra   # EXTRA_* are blank-separated overrides
    read -r -a extra <<<"${!extra_name:-}"
    over+=("${extra[@]}")
    echo "$anvil train $config ${over[*]}" >"$logs/$name.anvil.cmd"
    if ! "$anvil" config "$config" "${over[@]}" >"$logs/$name.config.yaml" 2>"$logs/$name.config.err"; then
        echo "  anvil config failed: $(head -1 "$logs/$name.config.err")"
        cp "$logs/$name.config.err" "$logs/$name.anvil.log"
        echo "rc=2 killed=0 mem_mib=n/a" >"$logs/$name.anvil.log.status"
        echo "rc=2 killed=0 mem_mib=n/a" >"$logs/$name.torch.log.status"
        return
    fi
    run_watched "$logs/$name.anvil.log" "$rundir/metrics.jsonl" "$STEPS" \
        "$anvil" train "$config" "${over[@]}"
    [ -f "$rundir/metrics.jsonl" ] && cp "$rundir/metrics.jsonl" "$logs/$name.anvil.metrics.jsonl"
    # train.matmul_algo's per-problem timings (the cuda backend, after step 1)
    [ -f "$rundir/matmul_algos_rank0.txt" ] &&
        cp "$rundir/matmul_algos_rank0.txt" "$logs/$name.anvil.matmul_algos.txt"
    rm -rf "$rundir"
    # shellcheck disable=SC2086  # TORCH_ARGS is a list of options
    run_watched "$logs/$name.torch.log" "" 0 \
        "$PYTHON" tests/reference/torch_baseline.py "$logs/$name.config.yaml" --device "$DEVICE" \
        --warmup "$WARMUP" --peak-tflops "$PEAK_TFLOPS" --json "$logs/$name.torch.json" \
        $TORCH_ARGS
}

models=()
if [[ -z $only || $only == gpt2 ]]; then
    bench gpt2 "GPT-2 124M" configs/gpt2-124m.yaml "$T_GPT2" "$MB_GPT2" "$GB_GPT2" 50257 \
        "${SHARD_GPT2:-}"
    models+=(gpt2)
fi
if [[ -z $only || $only == llama ]]; then
    bench llama "Llama 1B" configs/llama-1b.yaml "$T_LLAMA" "$MB_LLAMA" "$GB_LLAMA" 128256 \
        "${SHARD_LLAMA:-}"
    models+=(llama)
fi

# machine, then the table (and --write)
gpu_info=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i "$gpu" 2>/dev/null | head -1 || true)
cuda_ver=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -1 || true)
torch_ver=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo unknown)
rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "unknown (no git)")
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
cores=$(nproc)
dev_env=
if [[ $DEVICE != cuda ]]; then dev_env=" DEVICE=$DEVICE"; fi
export GB_LOGS=$logs GB_MODELS="${models[*]}" GB_WARMUP=$WARMUP GB_STEPS=$STEPS \
    GB_WRITE=$write GB_GPU="${gpu_info:-unknown GPU}" GB_CUDA="${cuda_ver:-CUDA unknown}" \
    GB_TORCH=$torch_ver GB_REV=$rev GB_CPU="$cpu, $cores cores" GB_CMD="$cmdline" \
    GB_ENV="${EXTRA_GPT2:+EXTRA_GPT2=\"$EXTRA_GPT2\" }${EXTRA_LLAMA:+EXTRA_LLAMA=\"$EXTRA_LLAMA\" }${ANVIL:+ANVIL=$ANVIL }STEPS=$STEPS WARMUP=$WARMUP MB_GPT2=$MB_GPT2 MB_LLAMA=$MB_LLAMA GB_GPT2=${GB_GPT2:-} GB_LLAMA=${GB_LLAMA:-} PEAK_TFLOPS=$PEAK_TFLOPS T_GPT2=$T_GPT2 T_LLAMA=$T_LLAMA${TORCH_ARGS:+ TORCH_ARGS=\"$TORCH_ARGS\"}$dev_env" \
    GB_PERF=$repo/docs/perf.md
"$PYTHON" - <<'PY'
import datetime, json, os, statistics

E = os.environ
logs, warmup = E["GB_LOGS"], int(E["GB_WARMUP"])
LABEL = {"gpt2": "GPT-2 124M", "llama": "Llama 1B"}


def status(path):
    try:
        return dict(kv.split("=", 1) for kv in open(path + ".status").read().split())
    except OSError:
        return {"rc": "?", "killed": "0", "mem_mib": "n/a"}


def mem(st):
    return "n/a" if st["mem_mib"] == "n/a" else f"{int(st['mem_mib']) / 1024:.1f} GiB"


def anvil_result(name):
    st = status(f"{logs}/{name}.anvil.log")
    ok = st["rc"] == "0" or st["killed"] == "1"
    try:
        rows = [json.loads(l) for l in open(f"{logs}/{name}.anvil.metrics.jsonl")
                if '"loss"' in l]
    except OSError:
        rows = []
    timed = [r for r in rows if r["step"] > warmup]
    if not ok or not timed or rows[-1]["step"] != int(E["GB_STEPS"]):
        return None, st
    t = sum(r["ms_per_step"] for r in timed) / 1e3
    tps = sum(r["tokens_per_s"] * r["ms_per_step"] / 1e3 for r in timed) / t
    ratio = [r["mfu"] / r["tokens_per_s"] for r in timed if r.get("mfu") and r["tokens_per_s"]]
    return {"tokens_per_s": tps, "ms_per_step": 1e3 * t / len(timed),
            "mfu": tps * statistics.mean(ratio) if ratio else None,
            "flops_ratio": statistics.mean(ratio) if ratio else None}, st


def torch_result(name):
    st = status(f"{logs}/{name}.torch.log")
    try:
        return (json.loads(open(f"{logs}/{name}.torch.json").read()) if st["rc"] == "0"
                else None), st
    except (OSError, ValueError):
        return None, st


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


lines = ["| model | impl | tokens/s | ms/step | MFU | peak GPU memory (nvidia-smi) | "
         "torch allocator peak | anvil / PyTorch tokens/s | goal |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
notes, failed = [], False
for name in E["GB_MODELS"].split():
    a, ast = anvil_result(name)
    t, tst = torch_result(name)
    failed |= a is None or t is None
    ratio = a["tokens_per_s"] / t["tokens_per_s"] if a and t else None
    if name == "gpt2":
        goal = ">= 1.30x PyTorch: " + ("n/a" if ratio is None else
                                       "met" if ratio >= 1.3 else "NOT met")
    else:
        m = a["mfu"] if a else None
        goal = ">= 50% MFU: " + ("n/a" if m is None else "met" if m >= 0.5 else "NOT met")
    if a:
        lines.append(f"| {LABEL[name]} | anvil | {a['tokens_per_s']:.0f} | "
                     f"{a['ms_per_step']:.1f} | {pct(a['mfu'])} | {mem(ast)} | | "
                     f"{'n/a' if ratio is None else f'{ratio:.2f}x'} | {goal} |")
    else:
        lines.append(f"| {LABEL[name]} | anvil | failed (exit {ast['rc']}, see "
                     f"{name}.anvil.log) | | | | | | {goal} |")
    if t:
        alloc = f"{t['peak_mem_bytes'] / 2**30:.1f} GiB" if t.get("peak_mem_bytes") else "n/a"
        lines.append(f"| {LABEL[name]} | PyTorch {t['torch']} | {t['tokens_per_s']:.0f} | "
                     f"{t['ms_per_step']:.1f} | {pct(t['mfu'])} | {mem(tst)} | {alloc} | | |")
        notes.append(f"{LABEL[name]}: {t['n_params'] / 1e6:.1f}M parameters, "
                     f"B={t['micro_batch']}, T={t['seq_len']}, "
                     f"{t['global_batch_tokens']} tokens/step ({t['accum']} micro-batches), "
                     f"steps {t['warmup_steps'] + 1}-{t['steps']} timed; "
                     f"{t['flops_per_token'] / 1e9:.3f} GFLOP/token; PyTorch: "
                     f"{'bf16 autocast' if t['dtype'] == 'bf16' else t['dtype']}, "
                     f"compile {t['compile']}"
                     f"{' (' + t['compile_mode'] + ')' if t['compile'] else ''}, attention "
                     f"{t['attention']}, AdamW {t['adamw']}; warm-up took {t['warmup_s']:.0f} s")
        if a and a["flops_ratio"] and t.get("peak_tflops"):
            fpt_anvil = a["flops_ratio"] * t["peak_tflops"] * 1e12
            if abs(fpt_anvil / t["flops_per_token"] - 1) > 0.005:
                notes.append(f"WARNING {LABEL[name]}: anvil counts {fpt_anvil / 1e9:.3f} "
                             f"GFLOP/token, the baseline {t['flops_per_token'] / 1e9:.3f}")
    else:
        lines.append(f"| {LABEL[name]} | PyTorch | failed (exit {tst['rc']}, see "
                     f"{name}.torch.log) | | | | | | |")

date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
gpu = E["GB_GPU"].split(", ") + ["?", "?"]   # name, driver, memory
machine = (f"{gpu[0]} ({gpu[2]}), driver {gpu[1]}, {E['GB_CUDA']}; host {E['GB_CPU']}; "
           f"PyTorch {E['GB_TORCH']}; anvil {E['GB_REV']}")
block = "\n".join(lines + [""] + [f"- {n}" for n in notes])
print()
print(block)
print(f"\nmachine: {machine}\ndate: {date}\n")
open(f"{logs}/table.md", "w").write(block + "\n")

if E["GB_WRITE"] == "1":
    perf = E["GB_PERF"]
    text = open(perf).read()
    entry = (f"\n### Measured {date} on {gpu[0]} (tests/bench/gpu_bench.sh)\n\n"
             f"Machine: {machine}. Command: `{E['GB_ENV']} {E['GB_CMD']}`.\n\n{block}\n")
    head = "\n## GPU training step"
    at = text.find(head)
    if at < 0:
        text = text.rstrip("\n") + "\n" + head + ": anvil vs PyTorch\n" + entry
    else:
        nxt = text.find("\n## ", at + len(head))
        end = len(text) if nxt < 0 else nxt
        text = text[:end].rstrip("\n") + "\n" + entry + text[end:]
    open(perf, "w").write(text)
    print(f"appended to {perf}")
raise SystemExit(1 if failed else 0)
PY
