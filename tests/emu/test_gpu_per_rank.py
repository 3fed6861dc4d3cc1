#!/usr/bin/env python3
"""mpi suite (tests/emu): one GPU per rank. Two ranks of a node on the same GPU are
refused at start, with one line that names them and the GPU, exit 2 (NCCL would fail
in ncclCommInitRank with "Duplicate GPU", and each rank's memory plan counts the whole
device); ranks that see different GPUs, by number or because each sees its own GPU as
number 0 (CUDA_VISIBLE_DEVICES per rank, srun --gpus-per-task=1), train, and rank 0
says once which GPU it runs on (anv_cuda_describe: name, compute capability,
multiprocessors, the driver, runtime, cuBLASLt and NCCL versions).

usage: python3 test_gpu_per_rank.py ANVIL_EMULATED   (the first python3 on the PATH;
standard library only; mpiexec on the PATH, OMPI_ALLOW_RUN_AS_ROOT* set by meson)

The emulated node's GPUs (tests/emu/include/cuda_runtime_api.h): EMU_DEVICE_COUNT of
them visible to a process, the first being the node's number EMU_DEVICE_FIRST; the GPU's
identity is its PCI bus id, as on a real node. Open MPI gives each rank its local rank
(OMPI_COMM_WORLD_LOCAL_RANK), so rank i takes visible GPU i modulo the count.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from checks import report, summary  # noqa: E402
from corpus import prepare_corpus  # noqa: E402


def run(anvil, per_rank_env, args, run_dir):
    """One mpiexec, a rank per entry of per_rank_env (MPMD, each rank its own env): exit
    code, the "anvil: device cuda" lines of stderr, stderr, stdout."""
    cmd = ["mpiexec", "--oversubscribe"]
    for i, env in enumerate(per_rank_env):
        if i:
            cmd.append(":")
        cmd += ["-n", "1", "env"] + [f"{k}={v}" for k, v in env.items()]
        cmd += [anvil, "train"] + args + [f"run.dir={run_dir}"]
    p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"),
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("anvil: device cuda")]
    return p.returncode, lines, p.stderr, p.stdout


def main():
    anvil = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        shards = prepare_corpus(anvil, tmp)
        common = ["model.preset=gpt2-tiny", f"data.train={shards}", "data.val=",
                  "train.steps=1", "train.eval_every=0", "train.sample_every=0",
                  "train.seq_len=32", "train.micro_batch=2", "train.global_batch_tokens=128",
                  "checkpoint.every=0", "checkpoint.final=false", "parallel.dp=2"]
        refused = [  # name, per-rank env, device, the two ranks and the GPU named
            ("2 ranks, 1 GPU", [{"EMU_DEVICE_COUNT": 1}] * 2, "cuda", (0, 1, "0000:00:00.0")),
            ("2 ranks, 1 GPU, device=auto", [{"EMU_DEVICE_COUNT": 1}] * 2, "auto",
             (0, 1, "0000:00:00.0")),
            ("2 ranks each seeing the same one GPU",
             [{"EMU_DEVICE_COUNT": 1, "EMU_DEVICE_FIRST": 3}] * 2, "cuda",
             (0, 1, "0000:03:00.0")),
        ]
        for name, envs, device, (a, b, gpu) in refused:
            rc, lines, err, _ = run(anvil, envs, common + [f"device={device}"],
                                 os.path.join(tmp, name.replace(" ", "_")))
            want = f"anvil: device cuda: ranks {a} and {b} run on the same GPU ({gpu})"
            report(rc == 2 and len(lines) == 1 and lines[0].startswith(want),
                   f"{name}: exit {rc} (2), one line: {lines[0] if lines else err[-300:]!r}")
        # 3 ranks, 2 GPUs: ranks 0 and 2 both take GPU 0
        rc, lines, err, _ = run(anvil, [{"EMU_DEVICE_COUNT": 2}] * 3,
                             common[:-1] + ["parallel.dp=3", "train.global_batch_tokens=192",
                                            "device=cuda"], os.path.join(tmp, "three"))
        report(rc == 2 and len(lines) == 1 and "ranks 0 and 2 run on the same GPU "
               "(0000:00:00.0), 3 ranks on this node and 2 GPUs visible to each" in lines[0],
               f"3 ranks, 2 GPUs: exit {rc} (2): {lines[0] if lines else err[-300:]!r}")
        allowed = [
            ("2 ranks, 2 GPUs", [{"EMU_DEVICE_COUNT": 2}] * 2),
            ("2 ranks, each its own GPU as number 0",
             [{"EMU_DEVICE_COUNT": 1, "EMU_DEVICE_FIRST": 0},
              {"EMU_DEVICE_COUNT": 1, "EMU_DEVICE_FIRST": 1}]),
        ]
        for name, envs in allowed:
            d = os.path.join(tmp, name.replace(" ", "_"))
            rc, lines, err, out = run(anvil, envs, common + ["device=cuda"], d)
            trained = os.path.exists(os.path.join(d, "metrics.jsonl"))
            report(rc == 0 and not lines and trained,
                   f"{name}: trains (exit {rc}{'' if rc == 0 else ': ' + err[-300:]})")
            # rank 0 says which GPU it runs on, with the driver / runtime / cuBLASLt versions
            said = [ln for ln in out.splitlines() if ln.startswith("device (rank 0): ")]
            want = ("device (rank 0): GPU 0: host emulation (tests/emu) (compute capability "
                    "9.0, 16 multiprocessors), CUDA driver 13.0, runtime 13.0, cuBLASLt 13.0.0, "
                    "NCCL 2.28.9")
            report(said == [want], f"{name}: one line on the GPU: {said}")
    return summary("gpu_per_rank")


if __name__ == "__main__":
    sys.exit(main())
