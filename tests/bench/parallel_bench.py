#!/usr/bin/python3
"""tests/bench/parallel_bench.py: distributed CPU training over MPI (a benchmark, not a test).

Two measurements of `anvil train` under mpiexec, on whatever cores the machine has:

1. Scaling. tokens/s of one rank against two data-parallel ranks for GPT-2 shapes: dp1
   with 1 and 2 OpenMP threads, dp2 (and dp2 + ZeRO-1) with 1 thread per rank, dp2 with
   2 threads per rank (oversubscribed; first model only), and dp1 with 1 thread on half
   the batch, which is the compute of one dp2 rank without its communication: the
   difference of the two step times estimates what the gradient all-reduce (plus waiting
   for the slower rank and the two ranks' contention for memory) costs. Open MPI 4 binds
   every rank to one core when it starts 1 or 2 ranks, so the runs with 2 threads per
   rank pass `--bind-to none` (one row shows the default binding's cost). Each
   configuration runs --reps times, interleaved, after waiting (a little) for idle
   cores; the "others" column is the CPU time that processes outside the run used while
   it ran, as a share of all cores. A configuration none of whose runs had at most 10%
   "others" runs again (up to --max-runs, while the benchmark is within --budget
   seconds); the fastest undisturbed run counts, else the fastest (other jobs only ever
   slow a run down).

2. Communication volume. comm_bytes (bytes world rank 0 sent in the step, by the
   standard-algorithm accounting of docs/parallel.md) for every layout of dp, tp, pp
   and ZeRO-1, against an analytic count built here from the model shape and the layout
   (the tensor table of trainer/model.c, the 1F1B sends of parallel/pipeline.c and the
   collectives of trainer/train.c, replicated in Python); the ratio must be 1.

Every figure is the median over the steps after the first two (warm-up). The markdown
goes to stdout, progress to stderr; with --write it is also appended to docs/perf.md.
  usage: /usr/bin/python3 tests/bench/parallel_bench.py [--write] [--steps N]
             [--comm-steps N] [--reps N] [--max-runs N] [--budget S] [--no-scaling]
             [--no-comm] [--no-124m]
"""
import argparse
import datetime
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANVIL = os.path.join(ROOT, "build", "anvil")
DATA = os.path.join(ROOT, "runs", "data", "fortunes")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MPIEXEC = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS={k} " \
          "mpiexec -n {r} --oversubscribe{bind} build/anvil train"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# the machine and the data

def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return f"{os.cpu_count()} cores, {cpu}, {kib // 2**20} GiB"


def ensure_data():
    if glob.glob(os.path.join(DATA, "train_*.bin")):
        return
    files = sorted(p for p in glob.glob("/usr/share/games/fortunes/*")
                   if os.path.isfile(p) and "." not in os.path.basename(p))
    subprocess.run([ANVIL, "prepare", "text", "--out", DATA, "--doc-sep", "%"] + files,
                   check=True, stdout=subprocess.DEVNULL)


def cpu_busy_s():
    """CPU seconds all cores have spent busy since boot (everything but idle, iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


WAIT_LEFT_S = [60.0]   # waiting allowed over the whole benchmark, so it ends in ~10 min
DISTURBED = 0.10       # "others" above this share of the cores: run the configuration again
DEADLINE = [0.0]       # no reruns after this time (_now()), set by main from --budget


def wait_quiet(limit_s=20.0, busy_max=0.15):
    """Before a timed run: wait (up to limit_s, and what is left of WAIT_LEFT_S) until the
    cores are idle but for busy_max of their time over half a second, since other jobs on a
    2-core machine halve a rate. Returns the last busy share seen."""
    t0 = _now()
    while True:
        b0 = cpu_busy_s()
        time.sleep(0.5)
        busy = (cpu_busy_s() - b0) / 0.5 / os.cpu_count()
        waited = _now() - t0
        if busy <= busy_max or waited > limit_s or waited > WAIT_LEFT_S[0]:
            WAIT_LEFT_S[0] -= waited
            return busy
        log(f"  waiting: other processes keep the cores {100 * busy:.0f}% busy")


# ---------------------------------------------------------------------------------------
# running anvil

class Shape:
    """A model and batch: the overrides anvil gets and what the analytic count needs."""

    def __init__(self, name, family="gpt2", n_layer=4, d_model=256, n_head=4, n_kv_head=0,
                 vocab=257, seq_len=128, micro_batch=4, batch_tokens=4096, tied=True):
        self.name, self.family, self.n_layer, self.C = name, family, n_layer, d_model
        self.n_head, self.n_kv = n_head, n_kv_head or n_head
        self.V, self.T, self.B, self.gbt, self.tied = vocab, seq_len, micro_batch, batch_tokens, tied
        self.gpt2 = family == "gpt2"
        # model_config_resolve's defaults (trainer/model.c)
        self.F = 4 * d_model if self.gpt2 else (8 * d_model // 3 + 63) // 64 * 64
        self.maxT = 1024
        self.qkv_bias = self.gpt2   # config default qkv_bias=false; gpt2 forces it on

    def overrides(self, batch_tokens=None):
        o = [f"model.family={self.family}", f"model.n_layer={self.n_layer}",
             f"model.d_model={self.C}", f"model.n_head={self.n_head}"]
        if self.n_kv != self.n_head:
            o.append(f"model.n_kv_head={self.n_kv}")
        o += [f"model.vocab_size={self.V}"]
        if not self.tied:
            o.append("model.tie_embeddings=false")
        o += [f"train.seq_len={self.T}", f"train.micro_batch={self.B}",
              f"train.global_batch_tokens={batch_tokens or self.gbt}"]
        return o


def run(shape, dp, tp, pp, zero, threads, steps, batch_tokens=None, bind_none=False):
    """One `anvil train` under mpiexec. Returns a dict of medians (steps 3..N) or raises.
    Open MPI 4 binds each rank to one core when it starts at most 2 ranks, so a rank's
    OpenMP threads share that core unless bind_none (mpiexec --bind-to none)."""
    ranks = dp * tp * pp
    d = tempfile.mkdtemp(prefix="anvil-par-")
    ov = shape.overrides(batch_tokens) + [
        f"train.steps={steps}", "train.log_every=1000", "data.val=", "train.sample_every=0",
        f"run.dir={d}", f"parallel.dp={dp}", f"parallel.tp={tp}", f"parallel.pp={pp}",
        f"parallel.zero={zero}"]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS=str(threads))
    cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe"] + \
        (["--bind-to", "none"] if bind_none else []) + [ANVIL, "train"] + ov
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = cpu_busy_s()
    t0 = _now()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    wall = _now() - t0
    busy = cpu_busy_s() - busy0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    try:
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n{p.stdout}{p.stderr}")
        want = f"layout dp={dp} tp={tp} pp={pp} zero={1 if zero and dp > 1 else 0} ({ranks} rank"
        if want not in p.stdout:
            raise RuntimeError(f"layout line lacks '{want}':\n{p.stdout}")
        with open(os.path.join(d, "metrics.jsonl")) as f:
            rows = [json.loads(l) for l in f if '"tokens_per_s"' in l]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if len(rows) != steps:
        raise RuntimeError(f"{len(rows)} metric rows for {steps} steps: {' '.join(cmd)}")
    comm = sorted({r["comm_bytes"] for r in rows})   # every step, warm-up included
    rows = rows[2:] if steps > 2 else rows
    return {"ms": statistics.median(r["ms_per_step"] for r in rows),
            "tps": statistics.median(r["tokens_per_s"] for r in rows),
            "comm": statistics.median(r["comm_bytes"] for r in rows),
            "comm_range": (comm[0], comm[-1]),
            "others": max(0.0, busy - ours) / (wall * os.cpu_count()),
            "overrides": ov}


def _now():
    return time.monotonic()


# ---------------------------------------------------------------------------------------
# the analytic byte count of world rank 0 (pp_rank 0, dp_rank 0, tp_rank 0)

# int32 flags every step starts with, all-reduced (max) over the world (trainer/train.c):
# a data error, a stop signal, and an asynchronous checkpoint still being written. (Two
# before the asynchronous checkpoints of commit 9666e03, as docs/parallel.md still says;
# with two here, every measured count is floor(2 (W-1) 4 / W) bytes, one int32's
# all-reduce, above the analytic one.)
STEP_FLAGS = 3


def all_reduce_bytes(n, b):
    return 0 if n == 1 else 2 * (n - 1) * b // n


def stage_layers(n_layer, pp, stage):
    """pipeline_split_layers without parallel.pp_layers: the first n_layer % pp stages get
    one more layer. Returns (first layer, count)."""
    base, extra = divmod(n_layer, pp)
    return stage * base + min(stage, extra), base + (1 if stage < extra else 0)


def local_n_alloc(s, tp, pp, stage, shards):
    """n_alloc of the flat parameter buffer on tp rank 0 of pipeline stage `stage`: the
    tensor table of build_table (trainer/model.c) with tp-local shapes, each tensor padded
    to 16 floats, the total rounded up to a multiple of `shards` (dp under ZeRO-1)."""
    C, HS = s.C, s.C // s.n_head
    QD, KD, F = s.n_head * HS, s.n_kv * HS, s.F
    Vp = -(-s.V // tp)
    first, last = stage == 0, stage == pp - 1
    total = 0

    def add(g0, g1=0, split=-1):   # split: -1 whole, 0 rows, 1 columns (over tp)
        nonlocal total
        r, c = g0, g1
        if tp > 1 and split == 0:
            r //= tp
        if tp > 1 and split == 1:
            c //= tp
        total += -(-(r * (c or 1)) // 16) * 16

    if first or (last and s.tied):
        add(Vp * tp, C, 0)                       # wte
    if s.gpt2 and first:
        add(s.maxT, C)                           # wpe
    for _ in range(stage_layers(s.n_layer, pp, stage)[1]):
        add(C)                                   # norm_1.weight
        if s.gpt2:
            add(C)                               # norm_1.bias
        for rows in (QD, KD, KD):                # wq, wk, wv (+ biases): column-parallel
            add(rows, C, 0)
            if s.qkv_bias:
                add(rows, 0, 0)
        add(C, QD, 1)                            # wo: row-parallel
        if s.gpt2:
            add(C)                               # wo.bias, replicated
        add(C)                                   # norm_2.weight
        if s.gpt2:
            add(C)                               # norm_2.bias
            add(F, C, 0)                         # fc
            add(F, 0, 0)                         # fc.bias
            add(C, F, 1)                         # proj
            add(C)                               # proj.bias
        else:
            add(F, C, 0)                         # gate
            add(F, C, 0)                         # up
            add(C, F, 1)                         # down
    if last:
        add(C)                                   # norm_f.weight
        if s.gpt2:
            add(C)                               # norm_f.bias
        if not s.tied:
            add(Vp * tp, C, 0)                   # lm_head
    return -(-total // shards) * shards


def analytic(s, dp, tp, pp, zero):
    """Bytes world rank 0 sends in one training step, by part."""
    W = dp * tp * pp
    zero = zero and dp > 1
    M = s.gbt // s.T // dp // s.B               # micro-batches per dp rank
    N, C = s.B * s.T, s.C
    act = N * C * 4                              # one (B,T,C) fp32 activation
    last = pp == 1                               # rank 0 is stage 0; also the last if pp 1
    L0 = stage_layers(s.n_layer, pp, 0)[1]
    n_alloc = local_n_alloc(s, tp, pp, 0, dp if zero else 1)
    parts = {}
    if zero:
        shard = n_alloc // dp
        parts["dp"] = 2 * (dp - 1) * shard * 4   # reduce-scatter + all-gather
    else:
        parts["dp"] = all_reduce_bytes(dp, n_alloc * 4)
    # per micro-batch: embedding sum, 2 forward + 2 backward sums per layer, the head's
    # input-gradient sum, and the gather of the cross-entropy statistics (N, 3)
    n_sums = 1 + 4 * L0 + (1 if last else 0)
    parts["tp"] = M * (n_sums * all_reduce_bytes(tp, act) +
                       ((tp - 1) * N * 3 * 4 if last and tp > 1 else 0))
    parts["pp"] = M * act if pp > 1 else 0       # stage 0 sends each activation once
    parts["tied"] = (-(-s.V // tp)) * C * 4 if pp > 1 and s.tied else 0
    # the step's flags at the start, the grad-norm and the loss sums (1 f64 each)
    parts["small"] = all_reduce_bytes(W, 4 * STEP_FLAGS) + 2 * all_reduce_bytes(W, 8)
    return parts, n_alloc, M


# ---------------------------------------------------------------------------------------
# the two measurements

def scaling(shape, steps, reps, max_runs, first):
    """Returns the markdown table rows and a summary line for one model."""
    # label, dp, zero, threads per rank, batch tokens, --bind-to none, first model only
    configs = [
        ("dp1, 1 thread", 1, 0, 1, None, False, False),
        ("dp1, 2 threads (--bind-to none)", 1, 0, 2, None, True, False),
        ("dp1, 2 threads, default binding (both on one core)", 1, 0, 2, None, False, True),
        ("dp2, 1 thread/rank", 2, 0, 1, None, False, False),
        ("dp2 + ZeRO-1, 1 thread/rank", 2, 1, 1, None, False, False),
        ("dp2, 2 threads/rank (--bind-to none: 4 threads, 2 cores)", 2, 0, 2, None, True,
         True),
        ("dp1, 1 thread, half batch (one dp2 rank's compute)", 1, 0, 1, shape.gbt // 2,
         False, False),
    ]
    configs = [c for c in configs if first or not c[6]]
    runs = {c[0]: [] for c in configs}

    def one(c, note):
        label, dp, zero, k, bt, bind_none, _ = c
        log(f"scaling {shape.name}: {label} ({note})")
        wait_quiet()
        r = run(shape, dp, 1, 1, zero, k, steps, bt, bind_none)
        r["cmd"] = (MPIEXEC.format(k=k, r=dp, bind=" --bind-to none" if bind_none else "")
                    + " " + " ".join(o for o in r["overrides"]
                                     if not o.startswith("run.dir")))
        runs[label].append(r)
        log(f"  {r['ms']:.0f} ms/step, others {100 * r['others']:.0f}%")

    for rep in range(reps):
        for c in configs:
            one(c, f"run {rep + 1}/{reps}")
    for c in configs:
        while (all(r["others"] > DISTURBED for r in runs[c[0]]) and
               len(runs[c[0]]) < max_runs and _now() < DEADLINE[0]):
            one(c, "again: every run so far disturbed")
    best = {}
    for label, rs in runs.items():
        clean = [r for r in rs if r["others"] <= DISTURBED] or rs
        best[label] = max(clean, key=lambda r: r["tps"])
        best[label]["runs"] = len(rs)
    base = best["dp1, 1 thread"]
    rows = []
    for label, dp, zero, k, bt, _, _ in configs:
        r = best[label]
        tokens = bt or shape.gbt
        rel = r["tps"] / base["tps"]
        rows.append(f"| {shape.name} | {label} | {tokens} | {r['ms']:.0f} | {r['tps']:.0f} | "
                    f"{rel:.2f}x | {r['comm'] / 1e6:.2f} | {100 * r['others']:.0f}% | "
                    f"{r['runs']} |")
    dp2, z1 = best["dp2, 1 thread/rank"], best["dp2 + ZeRO-1, 1 thread/rank"]
    two = best["dp1, 2 threads (--bind-to none)"]
    half = best["dp1, 1 thread, half batch (one dp2 rank's compute)"]
    eff = dp2["tps"] / (2 * base["tps"])
    effz = z1["tps"] / (2 * base["tps"])
    vs2 = dp2["tps"] / two["tps"]
    comm_ms = dp2["ms"] - half["ms"]
    rate = f"{dp2['comm'] / 1e6 / comm_ms:.2f} GB/s" if comm_ms > 0 else "n/a"
    summary = (f"| {shape.name} | {eff:.2f} | {effz:.2f} | {two['tps'] / (2 * base['tps']):.2f} "
               f"| {vs2:.2f} | {comm_ms:.0f} ms ({100 * comm_ms / dp2['ms']:.0f}%) | "
               f"{dp2['comm'] / 1e6:.1f} MB -> {rate} |")
    return rows, summary, best


LAYOUTS = [  # dp, tp, pp, zero
    (2, 1, 1, 0), (2, 1, 1, 1), (1, 2, 1, 0), (1, 1, 2, 0), (2, 2, 1, 0), (1, 2, 2, 0),
    (2, 1, 2, 0), (2, 2, 2, 0), (2, 2, 2, 1),
]
# A second shape whose tensors are not multiples of 16 floats and whose vocabulary, layers
# and n_alloc do not divide evenly by tp, pp and dp (so the padding rules are exercised):
# GPT-2 with 3 layers, d_model 72 (6 heads of 12), and an untied GQA llama.
ODD_LAYOUTS = [(3, 1, 1, 1), (1, 3, 1, 0), (1, 2, 3, 0), (3, 1, 2, 1), (2, 3, 1, 1)]
LLAMA_LAYOUTS = [(1, 2, 1, 0), (2, 2, 2, 1), (1, 1, 3, 0)]


def layout_name(dp, tp, pp, zero):
    parts = [f"{n}{v}" for n, v in (("dp", dp), ("tp", tp), ("pp", pp)) if v > 1]
    return "x".join(parts) + (" + ZeRO-1" if zero else "")


def comm_rows(shape, layouts, steps):
    rows, bad = [], []
    for dp, tp, pp, zero in layouts:
        name = layout_name(dp, tp, pp, zero)
        log(f"comm {shape.name}: {name}")
        r = run(shape, dp, tp, pp, zero, 1, steps)
        parts, n_alloc, M = analytic(shape, dp, tp, pp, zero)
        want = sum(parts.values())
        lo, hi = r["comm_range"]
        ratio = r["comm"] / want
        if lo != hi or lo != want:
            bad.append(f"{shape.name} {name}: measured {lo:.0f}..{hi:.0f}, analytic {want}")
        split = " / ".join(f"{parts[k]}" for k in ("dp", "tp", "pp", "tied", "small"))
        rows.append(f"| {shape.name} | {name} | {dp * tp * pp} | {M} | {n_alloc} | "
                    f"{r['comm']:.0f} | {want} | {ratio:.4f} | {split} |")
    return rows, bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="append the tables to docs/perf.md")
    ap.add_argument("--steps", type=int, default=10, help="steps per scaling run")
    ap.add_argument("--comm-steps", type=int, default=5, help="steps per layout run")
    ap.add_argument("--reps", type=int, default=1, help="runs per scaling configuration")
    ap.add_argument("--max-runs", type=int, default=3,
                    help="runs of a configuration while every one was disturbed")
    ap.add_argument("--budget", type=float, default=480,
                    help="seconds after which disturbed configurations are not run again")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-124m", action="store_true", help="skip GPT-2 124M in the scaling")
    ap.add_argument("--no-comm", action="store_true")
    a = ap.parse_args()
    if not os.access(ANVIL, os.X_OK):
        sys.exit(f"{ANVIL} is missing: build first (ninja -C build)")
    ensure_data()
    DEADLINE[0] = _now() + a.budget - (0 if a.no_comm else 45)   # the layouts take ~35 s
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    mach = machine()
    big_steps = min(a.steps, 6)
    out = [f"### Measured {date} (tests/bench/parallel_bench.py)", "",
           f"Measured {date} on {mach}, Open MPI over shared memory, with "
           f"`/usr/bin/python3 tests/bench/parallel_bench.py{' --write' if a.write else ''}`. "
           f"Scaling: median over steps 3-{a.steps}, the fastest of the runs with at most "
           f"{100 * DISTURBED:.0f}% \"others\" (else of all runs) "
           f"(GPT-2 124M: steps 3-{big_steps}); layouts: steps 3-{a.comm_steps}.", ""]
    small = Shape("GPT-2 4L/256C")
    mid = Shape("GPT-2 6L/384C", n_layer=6, d_model=384, n_head=6)
    big = Shape("GPT-2 124M", n_layer=12, d_model=768, n_head=12, vocab=50257, seq_len=64,
                batch_tokens=512)
    if not a.no_scaling:
        log(f"machine: {mach}")
        rows, sums, cmds = [], [], []
        plan = [(small, a.steps, a.reps), (mid, a.steps, a.reps)]
        if not a.no_124m:   # 15-30 s a run: fewer steps
            plan.append((big, big_steps, a.reps))
        for s, steps, reps in plan:
            r, summ, best = scaling(s, steps, reps, a.max_runs, s is small)
            rows += r
            sums.append(summ)
            cmds.append(best["dp2, 1 thread/rank"]["cmd"])
        out += ["Scaling: 4L/256C and 6L/384C at B=4, T=128, 4096 tokens per step, "
                "vocabulary 257; GPT-2 124M at B=4, T=64, 512 tokens per step, vocabulary "
                "50257. \"others\": CPU time that processes outside the run used while it "
                "ran, as a share of all cores.", "",
                "| model | layout | tokens/step | ms/step | tokens/s | vs dp1 1 thread | "
                "comm MB/step (rank 0) | others | runs |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"] + rows + [""]
        out += ["| model | dp2 efficiency (a) | dp2 + ZeRO-1 efficiency | dp1 2 threads "
                "efficiency | dp2 / dp1 2 threads (b) | dp2 step minus half-batch dp1 step "
                "(comm + wait) | all-reduce volume -> rate |",
                "| --- | --- | --- | --- | --- | --- | --- |"] + sums + [""]
        out += ["Efficiency = tokens/s / (2 x tokens/s of dp1 with 1 thread). Commands (the "
                "dp2 rows; the other rows change `-n`, `OMP_NUM_THREADS`, `--bind-to none`, "
                "`parallel.dp`, `parallel.zero` and `train.global_batch_tokens`):", ""] + \
               [f"    {c} run.dir=$(mktemp -d)" for c in cmds] + [""]
    if not a.no_comm:
        odd = Shape("GPT-2 3L/72C", n_layer=3, d_model=72, n_head=6, seq_len=64,
                    micro_batch=2, batch_tokens=64 * 2 * 12)
        llama = Shape("llama 3L/96C GQA untied", family="llama", n_layer=3, d_model=96,
                      n_head=6, n_kv_head=2, seq_len=64, micro_batch=2,
                      batch_tokens=64 * 2 * 12, tied=False)
        rows, bad = comm_rows(small, LAYOUTS, a.comm_steps)
        r2, b2 = comm_rows(odd, ODD_LAYOUTS, a.comm_steps)
        r3, b3 = comm_rows(llama, LLAMA_LAYOUTS, a.comm_steps)
        rows, bad = rows + r2 + r3, bad + b2 + b3
        out += ["Communication volume of world rank 0 per step, measured (`comm_bytes`) "
                "against the analytic count (1 thread per rank, ranks oversubscribed; "
                "M: micro-batches per dp rank; n_alloc: rank 0's flat parameter buffer in "
                "floats; split: dp gradients / tp activations / pp activations / tied "
                "embedding / flag, norm and loss sums):", "",
                "| model | layout | ranks | M | n_alloc | measured B/step | analytic B/step | "
                "ratio | split dp / tp / pp / tied / small |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"] + rows + [""]
        out += ["Shapes: GPT-2 4L/256C as above (B=4, T=128, 4096 tokens/step); "
                "GPT-2 3L/72C (6 heads, ffn 288) and llama 3L/96C (6 heads, 2 kv heads, "
                "ffn 256, untied head) at B=2, T=64, 1536 tokens/step; vocabulary 257, "
                "max_seq_len 1024 (gpt2's wpe)."]
        if bad:
            out += ["", "MISMATCH: " + "; ".join(bad)]
        out.append("")
    text = "\n".join(out)
    print(text)
    if a.write:
        with open(os.path.join(ROOT, "docs", "perf.md"), "a") as f:
            f.write("\n" + text)
        log("appended to docs/perf.md")
    if not a.no_comm and bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
