#!/usr/bin/env python3
"""mpi suite: checkpoints resume training exactly, under any layout, after any stop.

For a tiny model of each family (10 steps, fixed seed):
1. exact resume on one rank: 10 steps straight vs 5 (ANVIL_TEST_STOP_AFTER_STEP=5, exit
   75) then the same command again: every step's loss identical as logged (%.9g), final
   weights bit-identical, and the step-10 checkpoints (/param, /adam_m, /adam_v, the
   state attributes) identical;
2. the same under dp2 x tp2 (4 ranks);
3. resharding: the dp2 x tp2 checkpoint of step 5 resumed under pp2 and under dp2 +
   ZeRO-1: losses and final weights within 1e-5 relative of the dp2 x tp2 resume.
Then, with a constant learning rate (so train.steps may change between launches):
4. SIGUSR1 to every rank, and SIGTERM to one rank only, of a dp2 x tp2 run: exit 75, the
   checkpoint of the last logged step committed; the same command continues from it;
5. kill -9 while training (checkpoint.every=3): the relaunch resumes from the newest
   committed checkpoint and ends bit-identical to an uninterrupted run;
6. kill -9 in the middle of a save (ANVIL_TEST_CKPT_PAUSE: pieces written, nothing
   committed): the .tmp directory has no MANIFEST, the relaunch resumes from the save
   before and ends bit-identical;
7. corruption (a flipped byte, a truncated index, a deleted MANIFEST, `latest` naming a
   missing step): reported by file name and skipped for the previous checkpoint;
   checkpoint.resume=PATH to a corrupt one: exit 2 with one line naming the file;
8. model.h5 read by h5py from another directory: every /param tensor at its global shape
   (wte: V = 257 rows), equal to run.final_weights of the same step.
Runs with Debian's /usr/bin/python3 (numpy, h5py); the ranks run under mpiexec (Open MPI,
--oversubscribe: 2 cores).

With --device cuda, cases 1-3 and 8 run with device=cuda (bf16 weights saved from the
fp32 master weights, ZeRO-1 ranges of them, the NCCL communicator), the resharded
resumes within TOL_CUDA (bf16 crosses the tensor-parallel all-reduce, and the layouts
reduce in other orders), and 8 also on the dp2 + ZeRO-1 resume (run.final_weights
writes the fp32 master weights, all-gathered over dp there, as the checkpoint does);
the other cases do not depend on the device and are not repeated. Exact resume needs
a deterministic backend: the host emulation of tests/emu is one (anvil_emulated); a
real GPU's atomics are not.
usage: /usr/bin/python3 test_checkpoint.py /path/to/anvil [--device cuda]
"""
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402
from corpus import prepare_corpus  # noqa: E402
from tensorfile import read_tensorfile  # noqa: E402

TOL = 1e-5
TOL_CUDA = 2e-2     # as test_layouts.py's, for the same reasons
STEPS = 10
HALF = 5            # where the interrupted runs stop
LR = 3e-3
ENV = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_TEST_")}
ENV.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
FAMILIES = {
    "gpt2": ["model.preset=gpt2-tiny"],
    "llama": ["model.preset=llama-tiny", "model.n_kv_head=2", "model.tie_embeddings=false"],
}
DP2TP2 = ["parallel.dp=2", "parallel.tp=2"]
RESHARD = [("pp2", 2, ["parallel.pp=2"]),
           ("dp2+zero1", 2, ["parallel.dp=2", "parallel.zero=1"])]
STATE_ATTRS = ["step", "tokens", "samples", "adamw_t", "sample_rng", "skipped_steps"]

COMMON = []         # data, batch and optimizer arguments, train.steps=STEPS (main fills)
CONST = []          # the same with a constant learning rate and no train.steps


class RunError(Exception):
    """A launch that did not end as expected; the message holds the command and output."""


def launch_cmd(anvil, ranks, args):
    cmd = [anvil, "train"] + args
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe"] + cmd
    return cmd


def run(anvil, ranks, args, expect=0, env=None):
    """Run to the end; raises RunError unless the exit code is `expect`."""
    cmd = launch_cmd(anvil, ranks, args)
    p = subprocess.run(cmd, env=dict(ENV, **(env or {})), capture_output=True, text=True,
                       timeout=300)
    if p.returncode != expect:
        raise RunError(f"{' '.join(cmd)} exited {p.returncode}, expected {expect}\n"
                       f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def start(anvil, ranks, args, log, env=None, stderr=None):
    """Launch in the background (its own session), stdout (and stderr unless given) to log."""
    out = open(log, "w")
    p = subprocess.Popen(launch_cmd(anvil, ranks, args), env=dict(ENV, **(env or {})),
                         stdout=out, stderr=stderr or subprocess.STDOUT, text=True,
                         start_new_session=True)
    out.close()
    return p


def finish(p, timeout=120):
    """Wait for a background launch; kill its session if it hangs. Returns the exit code."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return None


def metrics(run_dir):
    """[(step, loss as logged)] of every training step in metrics.jsonl."""
    out = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            m = re.match(r'\{"step": (\d+), "loss": ([^,}]+)', line)
            if m:
                out.append((int(m.group(1)), m.group(2)))
    return out


def last_step(run_dir):
    """The last step metrics.jsonl shows (complete lines only), 0 if none yet."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            lines = [l for l in f.read().split("\n")[:-1] if '"loss"' in l]
    except OSError:
        return 0
    return json.loads(lines[-1])["step"] if lines else 0


def wait_step(p, run_dir, n, timeout=60):
    """Poll until metrics.jsonl shows step >= n; that step, or None (exited, too slow)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and p.poll() is None:
        s = last_step(run_dir)
        if s >= n:
            return s
        time.sleep(0.002)
    return None


def step_dir(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"step_{step:08d}")


def latest(run_dir):
    try:
        with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
            return f.read()
    except OSError:
        return None


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        t.append(c)
    return t


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli, RFC 3720), written out here from the definition."""
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def committed(d):
    """d holds a MANIFEST (trailer last) whose lines match every file in d: SHA-256
    (format 1, "HEX  NAME") or CRC-32C and size (format 2, "HEX  SIZE  NAME")."""
    try:
        with open(os.path.join(d, "MANIFEST")) as f:
            lines = f.read().splitlines()
        crc = lines[-1].startswith("# anvil-manifest 2 crc32c files ")
        if not crc and not lines[-1].startswith("# anvil-manifest 1 files "):
            return False
        listed = {}
        for l in lines[:-1]:
            if crc:
                h, size, name = l.split("  ", 2)
                listed[name] = (h, int(size))
            else:
                h, name = l.split("  ", 1)
                listed[name] = (h, None)
        if set(listed) != set(os.listdir(d)) - {"MANIFEST"}:
            return False
        for name, (h, size) in listed.items():
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            if crc and (f"{crc32c(data):08x}" != h or len(data) != size):
                return False
            if not crc and hashlib.sha256(data).hexdigest() != h:
                return False
        return True
    except (OSError, ValueError, IndexError):
        return False


def newest_dir(run_dir):
    """The highest-numbered committed-looking step_NNNNNNNN directory."""
    root = os.path.join(run_dir, "checkpoints")
    steps = sorted(n for n in os.listdir(root) if re.fullmatch(r"step_\d{8}", n))
    return os.path.join(root, steps[-1])


def read_ckpt(d):
    """({KIND/NAME: array} of /param, /adam_m, /adam_v, {state attribute: value}) of d."""
    with h5py.File(os.path.join(d, "model.h5"), "r") as f:
        ts = {f"{k}/{n}": f[k][n][()] for k in ("param", "adam_m", "adam_v") for n in f[k]}
        return ts, {a: f.attrs[a] for a in STATE_ATTRS}


def resumed_from(p, run_dir, step):
    return f"resumed from {step_dir(run_dir, step)}: step {step}," in p.stdout


def rel_err(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) /
                 max(np.linalg.norm(b.astype(np.float64)), 1e-30))


def exact_resume(anvil, tmp, fam, ranks, lay, tag, copies=()):
    """Straight vs stopped-and-resumed; returns the straight run's directory and the
    resumed one's (its state at the stop copied to DIR-NAME for each name in copies)."""
    args = FAMILIES[fam] + lay
    a, b = os.path.join(tmp, f"{fam}-{tag}-straight"), os.path.join(tmp, f"{fam}-{tag}-resumed")
    run(anvil, ranks, COMMON + args + [f"run.dir={a}", f"run.final_weights={a}/w.bin"])
    cmd = COMMON + args + [f"run.dir={b}", f"run.final_weights={b}/w.bin"]
    stop = {"ANVIL_TEST_STOP_AFTER_STEP": str(HALF)}
    p = run(anvil, ranks, cmd, expect=75, env=stop)
    stopped_ok = (latest(b) == f"step_{HALF:08d}\n" and committed(step_dir(b, HALF)) and
                  f"stopped by signal {int(signal.SIGUSR1)} after step {HALF}" in p.stdout)
    for name in copies:
        shutil.copytree(b, f"{b}-{name}")
    p = run(anvil, ranks, cmd, env=stop)   # the same command again
    la, lb = metrics(a), metrics(b)
    wa, wb = read_tensorfile(f"{a}/w.bin"), read_tensorfile(f"{b}/w.bin")
    w_same = set(wa) == set(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa)
    (ta, sa), (tb, sb) = read_ckpt(newest_dir(a)), read_ckpt(newest_dir(b))
    bad = sorted(k for k in ta if k not in tb or not np.array_equal(ta[k], tb[k]))
    c_same = set(ta) == set(tb) and not bad and sa == sb and int(sa["step"]) == STEPS
    ok = (stopped_ok and resumed_from(p, b, HALF) and len(la) == STEPS and la == lb and
          w_same and c_same)
    report(ok, f"{fam:5} {tag:7} {ranks} rank(s): stop after step {HALF} (exit 75, committed: "
               f"{stopped_ok}), resume: {sum(x == y for x, y in zip(la, lb))}/{STEPS} losses "
               f"identical, final weights {'bit-identical' if w_same else 'DIFFER'}, step "
               f"{STEPS} checkpoint (param, adam_m, adam_v, adamw_t, state) "
               f"{'identical' if c_same else f'DIFFERS: {bad[:3]} {sa} vs {sb}'}")
    return a, b


def reshard(anvil, fam, base, ranks, lay, name, tol=TOL):
    """Resume the dp2 x tp2 step-5 copy under another layout, compare with base."""
    d = f"{base}-{name}"
    # llama reads the checkpoint piece by piece (each checked against its CRC-32C),
    # gpt2 whole files where a rank needs most of one: both ways of the loader
    p = run(anvil, ranks, COMMON + FAMILIES[fam] + lay +
            [f"run.dir={d}", f"run.final_weights={d}/w.bin"],
            env={"ANVIL_TEST_LOAD_PIECES": "1"} if fam == "llama" else None)
    got, ref = metrics(d), metrics(base)
    lerr = max(abs(float(x[1]) - float(y[1])) / abs(float(y[1]))
               for x, y in zip(got[HALF:], ref[HALF:]))
    w, wr = read_tensorfile(f"{d}/w.bin"), read_tensorfile(f"{base}/w.bin")
    werr, worst, drift_ok = 0.0, "", True
    for k, b in wr.items():
        if fam == "gpt2" and k.endswith(".attn.wk.bias"):
            # Its gradient is zero in exact arithmetic (see test_layouts.py): AdamW turns
            # rounding noise into updates of about lr. Bound the movement only.
            drift_ok &= float(np.abs(w[k]).max()) <= 2 * LR * STEPS
            continue
        e = rel_err(w[k], b)
        if e > werr:
            werr, worst = e, k
    ok = (resumed_from(p, d, HALF) and "(written by dp=2 tp=2 pp=1 zero=0)" in p.stdout and
          [s for s, _ in got] == list(range(1, STEPS + 1)) and got[:HALF] == ref[:HALF] and
          lerr < tol and werr < tol and drift_ok and set(w) == set(wr))
    report(ok, f"{fam:5} dp2xtp2 step {HALF} resumed under {name} ({ranks} ranks): loss max rel "
               f"err {lerr:.2e}, final weights max rel err {werr:.2e} ({worst}) (tol {tol})")


def rank_pids(anvil, run_dir):
    """{rank: pid} of the anvil processes training in run_dir, from /proc."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if argv[0] != anvil.encode() or f"run.dir={run_dir}".encode() not in argv:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            out[int(env.get(b"OMPI_COMM_WORLD_RANK", b"0"))] = int(pid)
        except (OSError, ValueError, IndexError):
            continue
    return out


def stop_by_signal(anvil, tmp, sig, which):
    """A dp2 x tp2 run stopped by `sig` sent to `which` ranks ("all" or a rank number),
    then continued for 3 more steps by the same command."""
    d = os.path.join(tmp, f"signal-{sig.name}")
    args = CONST + FAMILIES["gpt2"] + DP2TP2 + [f"run.dir={d}"]
    p = start(anvil, 4, args + ["train.steps=100000"], f"{d}.log")
    at = wait_step(p, d, 3)
    pids = rank_pids(anvil, d)
    targets = list(pids.values()) if which == "all" else [pids.get(which)]
    sent = at is not None and len(pids) == 4 and None not in targets
    for pid in targets if sent else []:
        os.kill(pid, sig)
    if not sent:
        os.killpg(p.pid, signal.SIGKILL)
    rc = finish(p)
    with open(f"{d}.log") as f:
        log = f.read()
    last = last_step(d)
    ok = (sent and rc == 75 and latest(d) == f"step_{last:08d}\n" and
          committed(step_dir(d, last)) and f"after step {last};" in log)
    q = run(anvil, 4, args + [f"train.steps={last + 3}"]) if ok else None
    ok2 = (q is not None and resumed_from(q, d, last) and
           [s for s, _ in metrics(d)] == list(range(1, last + 4)))
    whom = "every rank" if which == "all" else f"rank {which} only"
    report(ok and ok2, f"SIG{sig.name[3:]} to {whom} of 4 (dp2 x tp2) logged at step "
                       f"{at}: exit {rc}, step {last} (last logged) committed: {ok}; the same "
                       f"command with train.steps={last + 3} resumed there and finished: {ok2}"
                       + ("" if ok else f"\n{log[-2000:]}"))


def h5py_read(run_dir, fam, tmp, lay="dp2xtp2"):
    """8: the step-10 model.h5 of a run under layout lay, read from another working
    directory."""
    d = newest_dir(run_dir)
    w = read_tensorfile(f"{run_dir}/w.bin")
    away = tempfile.mkdtemp(dir=tmp)
    here = os.getcwd()
    os.chdir(away)
    try:
        with h5py.File(os.path.join(d, "model.h5"), "r") as f:
            got = {n: f["param"][n][()] for n in f["param"]}
            step = int(f.attrs["step"])
    finally:
        os.chdir(here)
    bad = sorted(k for k in w if k not in got or got[k].shape != w[k].shape or
                 np.isnan(got[k]).any() or not np.array_equal(got[k], w[k]))
    ok = set(got) == set(w) and not bad and got["wte"].shape[0] == 257 and step == STEPS
    report(ok, f"{fam:5} {lay} step {step} model.h5 read by h5py from {away}: {len(got)} "
               f"/param tensors at global shape (wte {got['wte'].shape}), equal to "
               f"run.final_weights{'' if not bad else f': DIFFER {bad[:4]}'}")


def same_end(run_dir, ref):
    """The run's losses and final weights bit-identical to the reference run's."""
    w, wr = read_tensorfile(f"{run_dir}/w.bin"), read_tensorfile(f"{ref}/w.bin")
    return (metrics(run_dir) == metrics(ref) and set(w) == set(wr) and
            all(np.array_equal(w[k], wr[k]) for k in wr))


def kill_training(anvil, tmp, every, ref):
    """5: SIGKILL once step 5 is logged; the relaunch to 9 steps ends as the reference."""
    d = os.path.join(tmp, "kill-training")
    p = start(anvil, 1, every + ["train.steps=100000", f"run.dir={d}"], f"{d}.log")
    at = wait_step(p, d, 5)
    os.killpg(p.pid, signal.SIGKILL)
    finish(p)
    name = (latest(d) or "").strip()
    newest = int(name[5:]) if re.fullmatch(r"step_\d{8}", name) else -1
    q = run(anvil, 1, every + ["train.steps=9", f"run.dir={d}", f"run.final_weights={d}/w.bin"])
    ok = (at is not None and newest in (3, 6) and committed(step_dir(d, newest)) and
          resumed_from(q, d, newest) and same_end(d, ref))
    report(ok, f"kill -9 at step {at} (checkpoint.every=3): newest committed step {newest}; "
               f"relaunch to 9 steps resumed from it, losses and final weights bit-identical "
               f"to the uninterrupted run: {ok}")


def async_saves(anvil, tmp, every, ref):
    """9: checkpoint.async under dp2 + ZeRO-1 and on one rank: each checkpoint's tensors
    and state equal the synchronous run's; a relaunch from step 6 of the async run (the
    later ones removed) ends bit-identical to the uninterrupted reference."""
    for ranks, lay, tag in ((1, [], "1rank"), (2, ["parallel.dp=2", "parallel.zero=1"], "dp2z")):
        a, s_ = os.path.join(tmp, f"async-{tag}"), os.path.join(tmp, f"sync-{tag}")
        run(anvil, ranks, every + lay + ["train.steps=9", "checkpoint.async=true",
                                         f"run.dir={a}"])
        run(anvil, ranks, every + lay + ["train.steps=9", f"run.dir={s_}"])
        same = True
        for step in (6, 9):
            ta, sa = read_ckpt(step_dir(a, step))
            tb, sb = read_ckpt(step_dir(s_, step))
            same &= (set(ta) == set(tb) and all(np.array_equal(ta[k], tb[k]) for k in tb)
                     and all(np.array_equal(sa[k], sb[k]) for k in sb))
        timed = [json.loads(l) for l in open(os.path.join(a, "metrics.jsonl"))
                 if "checkpoint_blocked_s" in l]
        report(same and [t["step"] for t in timed] == [3, 6, 9] and committed(step_dir(a, 9)),
               f"{tag}: async checkpoints at steps 3, 6, 9 committed, tensors and state "
               f"identical to synchronous saves, timings logged: {same}")
    a = os.path.join(tmp, "async-1rank")   # the one-rank run: the reference's layout
    shutil.rmtree(step_dir(a, 9))
    os.remove(os.path.join(a, "checkpoints", "latest"))
    q = run(anvil, 1, every + ["train.steps=9", f"run.dir={a}", f"run.final_weights={a}/w.bin"])
    w, wr = read_tensorfile(f"{a}/w.bin"), read_tensorfile(f"{ref}/w.bin")
    ok = resumed_from(q, a, 6) and all(np.array_equal(w[k], wr[k]) for k in wr)
    report(ok, f"resume from an async checkpoint (step 6): final weights bit-identical: {ok}")


def kill_saving(anvil, tmp, every, ref):
    """6: SIGKILL during the step-6 save (pieces in step_00000006.tmp, nothing committed)."""
    d = os.path.join(tmp, "kill-saving")
    p = start(anvil, 1, every + ["train.steps=100000", f"run.dir={d}"], f"{d}.log",
              env={"ANVIL_TEST_CKPT_PAUSE": "5"}, stderr=subprocess.PIPE)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in p.stderr], daemon=True).start()
    tmp6 = step_dir(d, 6) + ".tmp"
    seen, t_end = False, time.monotonic() + 120
    while not seen and time.monotonic() < t_end:
        try:
            l = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen = "test hook" in l and tmp6 in l and "paused" in l
    os.killpg(p.pid, signal.SIGKILL)
    finish(p)
    left = sorted(os.listdir(tmp6)) if os.path.isdir(tmp6) else None
    state_ok = (left is not None and "MANIFEST" not in left and "rank_00000_000.h5" in left and
                not os.path.exists(step_dir(d, 6)) and latest(d) == "step_00000003\n")
    q = run(anvil, 1, every + ["train.steps=9", f"run.dir={d}", f"run.final_weights={d}/w.bin"])
    stale = [n for n in os.listdir(os.path.join(d, "checkpoints")) if n.endswith(".tmp")]
    ok = seen and state_ok and resumed_from(q, d, 3) and same_end(d, ref) and not stale
    report(ok, f"kill -9 in the step 6 save (pause message seen: {seen}): step_00000006.tmp "
               f"holds {left} (no MANIFEST), latest still step 3: {state_ok}; relaunch to 9 "
               f"steps resumed from step 3, bit-identical to the uninterrupted run, no .tmp "
               f"left ({stale}): {ok}")


def corruption(anvil, tmp, every):
    """7: one damage per copy of a run holding the checkpoints of steps 3 and 6."""
    base = os.path.join(tmp, "corrupt-base")
    run(anvil, 1, every + ["train.steps=6", f"run.dir={base}"])
    ref = metrics(base)

    def flip(d):
        path = os.path.join(step_dir(d, 6), "rank_00000_000.h5")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0xFF]))

    def flip_tensor(d):
        # a byte inside the data of the file's first piece (its address from /pieces)
        with h5py.File(os.path.join(step_dir(d, 6), "model.h5"), "r") as f:
            addr = min(int(r["addr"]) for r in f["pieces"][()] if r["file"] == b"rank_00000_000.h5")
        path = os.path.join(step_dir(d, 6), "rank_00000_000.h5")
        with open(path, "r+b") as f:
            f.seek(addr + 5)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0x01]))

    def truncate(d):
        path = os.path.join(step_dir(d, 6), "model.h5")
        os.truncate(path, os.path.getsize(path) // 2)

    def unmanifest(d):
        os.remove(os.path.join(step_dir(d, 6), "MANIFEST"))

    def dangle(d):
        with open(os.path.join(d, "checkpoints", "latest"), "w") as f:
            f.write("step_00000099\n")

    pieces = {"ANVIL_TEST_LOAD_PIECES": "1"}
    cases = [("a flipped byte in step 6's rank_00000_000.h5", flip, "rank_00000_000.h5", 3, None),
             ("a flipped bit in a tensor of step 6, read piece by piece", flip_tensor,
              "CRC-32C mismatch", 3, pieces),
             ("step 6's model.h5 truncated", truncate, "model.h5", 3, None),
             ("step 6's MANIFEST deleted", unmanifest, "MANIFEST", 3, None),
             ("latest naming a missing step_00000099", dangle, "step_00000099", 6, None)]
    for i, (what, damage, needle, want, env) in enumerate(cases):
        d = os.path.join(tmp, f"corrupt-{i}")
        shutil.copytree(base, d)
        damage(d)
        p = run(anvil, 1, every + ["train.steps=7", f"run.dir={d}"], env=env)
        said = [l for l in p.stderr.splitlines()
                if l.startswith("anvil: checkpoint") and needle in l and "skipped" in l]
        got = metrics(d)
        ok = (len(said) == 1 and resumed_from(p, d, want) and got[:6] == ref and
              [s for s, _ in got] == list(range(1, 8)))
        report(ok, f"{what}: reported ({said[0] if said else p.stderr.strip()[-300:]}), resumed "
                   f"from step {want}, steps 1..6 logged as before: {ok}")

    # checkpoint.resume=PATH to a corrupt checkpoint: refused, one line naming the file
    d = os.path.join(tmp, "corrupt-path")
    shutil.copytree(base, d)
    flip(d)
    fresh = os.path.join(tmp, "corrupt-path-run")
    p = run(anvil, 1, every + ["train.steps=7", f"run.dir={fresh}",
                               f"checkpoint.resume={step_dir(d, 6)}"], expect=2)
    lines = [l for l in p.stderr.splitlines() if l.startswith("anvil:")]
    ok = len(lines) == 1 and "rank_00000_000.h5" in lines[0] and not os.path.exists(fresh)
    report(ok, f"checkpoint.resume=PATH of a corrupt checkpoint refused: exit {p.returncode}, "
               f"{len(lines)} line(s): {lines[0] if lines else '(no message)'}")


def sha256_manifest(anvil, tmp, every):
    """9: a SHA-256 MANIFEST passes GNU sha256sum -c and resumes like a CRC-32C one."""
    d = os.path.join(tmp, "sha256")
    run(anvil, 1, every + ["train.steps=3", f"run.dir={d}", "checkpoint.checksum=sha256"])
    c = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST"], cwd=step_dir(d, 3),
                       capture_output=True, text=True)
    p = run(anvil, 1, every + ["train.steps=4", f"run.dir={d}", "checkpoint.checksum=sha256"])
    ok = c.returncode == 0 and committed(step_dir(d, 3)) and resumed_from(p, d, 3)
    report(ok, f"checkpoint.checksum=sha256: sha256sum -c MANIFEST exit {c.returncode}, "
               f"resumed from step 3: {resumed_from(p, d, 3)}")


def no_odirect(anvil, tmp, every):
    """10: without O_DIRECT (as on a filesystem that refuses it; forced by the hook
    ANVIL_TEST_NO_ODIRECT=1) save and load use ordinary I/O: a stop and resume gives
    the losses of an uninterrupted run, and the MANIFEST matches the files."""
    env = {"ANVIL_TEST_NO_ODIRECT": "1"}
    d, ref = os.path.join(tmp, "no-odirect"), os.path.join(tmp, "no-odirect-ref")
    run(anvil, 1, every + ["train.steps=3", f"run.dir={d}"], env=env)
    p = run(anvil, 1, every + ["train.steps=5", f"run.dir={d}"], env=env)
    run(anvil, 1, every + ["train.steps=5", f"run.dir={ref}"])
    ok = resumed_from(p, d, 3) and metrics(d) == metrics(ref) and committed(step_dir(d, 5))
    report(ok, f"without O_DIRECT (hook): resumed from step 3, losses identical to an "
               f"uninterrupted run with it, MANIFEST matches: {ok}")


def master_weights(anvil, tmp):
    """11: the GPU's way of saving parameters, from fp32 master weights cut like the
    moments under ZeRO-1 (forced on the cpu by the hook ANVIL_TEST_MASTER=1, where the
    master weights equal the parameters): under dp2 + ZeRO-1, a stop and resume gives
    the losses and final weights of an uninterrupted run without the hook, bit for bit,
    and its checkpoint (each dp rank wrote its own range of every tensor) resumes on one
    rank to the same losses within TOL."""
    env = {"ANVIL_TEST_MASTER": "1"}
    lay = FAMILIES["llama"] + ["parallel.dp=2", "parallel.zero=1"]
    d, ref = os.path.join(tmp, "master"), os.path.join(tmp, "master-ref")
    run(anvil, 2, COMMON + lay + [f"run.dir={ref}", f"run.final_weights={ref}/w.bin"])
    cmd = COMMON + lay + [f"run.dir={d}", f"run.final_weights={d}/w.bin"]
    stop = dict(env, ANVIL_TEST_STOP_AFTER_STEP=str(HALF))
    run(anvil, 2, cmd, expect=75, env=stop)
    shutil.copytree(d, f"{d}-1rank")
    p = run(anvil, 2, cmd, env=stop)
    wa, wb = read_tensorfile(f"{ref}/w.bin"), read_tensorfile(f"{d}/w.bin")
    same = (metrics(d) == metrics(ref) and set(wa) == set(wb) and
            all(np.array_equal(wa[k], wb[k]) for k in wa))
    one = f"{d}-1rank"
    q = run(anvil, 1, COMMON + FAMILIES["llama"] + [f"run.dir={one}"], env=env)
    got, want = metrics(one), metrics(ref)
    lerr = max(abs(float(x[1]) - float(y[1])) / abs(float(y[1]))
               for x, y in zip(got[HALF:], want[HALF:]))
    ok = (same and resumed_from(p, d, HALF) and resumed_from(q, one, HALF) and
          len(got) == STEPS and lerr < TOL)
    report(ok, f"master weights (hook), dp2+zero1: stop and resume bit-identical to a run "
               f"without them: {same}; resumed on 1 rank: loss max rel err {lerr:.2e} "
               f"(tol {TOL})")


def main():
    anvil = os.path.abspath(sys.argv[1])
    cuda = sys.argv[2:] == ["--device", "cuda"]
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"data.train={prepare_corpus(anvil, tmp)}", "data.val=", "train.seq_len=32",
                "train.micro_batch=2", "train.global_batch_tokens=512", f"train.lr={LR}",
                "train.warmup_steps=2", "optim.grad_clip=0.5"]
        if cuda:
            base.append("device=cuda")
        COMMON[:] = base + [f"train.steps={STEPS}"]
        # the launches of 4-7 change train.steps: a constant rate keeps them comparable
        CONST[:] = base + ["train.schedule=constant"]

        # 1-3, 8: exact resume on one rank and under dp2 x tp2, resharding, h5py
        for fam in FAMILIES:
            try:
                exact_resume(anvil, tmp, fam, 1, [], "1rank")
                a, b = exact_resume(anvil, tmp, fam, 4, DP2TP2, "dp2xtp2",
                                    [name for name, _, _ in RESHARD])
                for name, ranks, lay in RESHARD:
                    reshard(anvil, fam, b, ranks, lay, name, TOL_CUDA if cuda else TOL)
                h5py_read(a, fam, tmp)
                if cuda:   # the master weights' shards gathered over dp for w.bin
                    h5py_read(f"{b}-dp2+zero1", fam, tmp, "dp2+zero1")
            except RunError as e:
                report(False, f"{fam}: {e}")
        if cuda:
            return summary("checkpoint (device=cuda)")

        # 4: stop signals to every rank, and to one rank only
        for sig, which in ((signal.SIGUSR1, "all"), (signal.SIGTERM, 3)):
            try:
                stop_by_signal(anvil, tmp, sig, which)
            except RunError as e:
                report(False, f"SIG{sig.name[3:]}: {e}")

        # 5-6: kill -9 while training and while saving, against an uninterrupted run
        every = CONST + FAMILIES["llama"] + ["checkpoint.every=3"]
        ref = os.path.join(tmp, "kill-ref")
        try:
            run(anvil, 1, every + ["train.steps=9", f"run.dir={ref}",
                                   f"run.final_weights={ref}/w.bin"])
            kill_training(anvil, tmp, every, ref)
            kill_saving(anvil, tmp, every, ref)
        except RunError as e:
            report(False, f"kill -9: {e}")

        # 9: async saves: the same checkpoints as synchronous ones, and a resume from
        # one of them ends bit-identical
        try:
            async_saves(anvil, tmp, every, ref)
        except RunError as e:
            report(False, f"async: {e}")

        # 7: corrupt checkpoints
        try:
            corruption(anvil, tmp, every)
        except RunError as e:
            report(False, f"corruption: {e}")

        # 9: checkpoint.checksum=sha256: `sha256sum -c MANIFEST` agrees, resume works
        try:
            sha256_manifest(anvil, tmp, every)
        except RunError as e:
            report(False, f"sha256: {e}")

        # 10: a filesystem without O_DIRECT: ordinary I/O, same results
        try:
            no_odirect(anvil, tmp, every)
        except RunError as e:
            report(False, f"without O_DIRECT: {e}")

        # 11: parameters saved from master weights (the GPU's way), ranged under ZeRO-1
        try:
            master_weights(anvil, tmp)
        except RunError as e:
            report(False, f"master weights: {e}")
    return summary("checkpoint")


if __name__ == "__main__":
    sys.exit(main())
