#!/usr/bin/env bash
# tests/gpu/device_check.sh: everything the GPU needs checked, as one prepared run on a
# machine lent for a few minutes (the device tool), which has the CUDA driver, toolkit,
# NCCL and PyTorch but none of Debian's MPI / HDF5 / libfyaml / OpenBLAS.
#
#   bash tests/gpu/device_check.sh prepare      # here: build + bundle into bundle/
#   bash tests/gpu/device_check.sh run          # there (carry: bundle): tests + bench
#
# prepare builds build-gpu/ for Hopper (gpu_arch 90; GPU_ARCH=80,90 for both) with
# portable host code (cpu_arch x86-64-v3, not -march=native: the GPU machine's
# processor may differ), then copies anvil, the gpu test programs and the libraries
# they need (../shared/tools/bundle-libs.sh) into bundle/gpu.tar.xz (at most 64 MiB
# travel). run unpacks it to /tmp, sources its env.sh, then writes under $OUT (or a
# temp dir):
#   ptx.log        the attention kernels' ldmatrix / mma fragment layouts against CuTe's
#                  (tests/gpu/test_ptx_layouts.cu: if attention fails, is it the layouts?)
#   gpu_ops.log    every cuda op against the cpu backend (tests/gpu/test_gpu_ops.c)
#   nccl.log       the NCCL backend against MPI, one rank (tests/gpu/test_nccl.c)
#   model.log      20 steps, both families, GPU against CPU (tests/gpu/test_model_gpu.py)
#   sdpa.log       tests/bench/sdpa_bench.py: PyTorch's fused attention kernels (flash,
#                  cuDNN, memory-efficient) at the benchmark's shapes, unless NO_BENCH=1
#   att.log        tests/bench/att_bench.c: anvil's attention kernels at the same shapes
#                  (forward with 128- and 64-row query blocks), unless NO_BENCH=1
#   mm.log         tests/bench/mm_bench.py: PyTorch's bf16 matmuls at every matmul shape
#                  of both models, as the profile names them, unless NO_BENCH=1
#   bench.log      tests/bench/gpu_bench.sh (anvil vs the PyTorch baseline), unless
#                  NO_BENCH=1; BENCH_ARGS are passed on (e.g. "--only gpt2")
#   memcheck.log, racecheck.log   with SANITIZE=1: the op test under compute-sanitizer
#                  (memcheck: every op; racecheck, slower: the kernels that share
#                  memory between threads: norm, attention, crossentropy). Seen working
#                  on the Firecracker machines only (KINDS.md); elsewhere they say so.
#   lt_load.log    cuBLASLt opened with dlopen as anvil does (tests/unit/test_cuda_lt_load.c)
#   libs.txt       where the machine's CUDA libraries were found (its own, else PyTorch's
#                  pip wheels, added to LD_LIBRARY_PATH)
#   summary.txt    one line per part with its exit code and seconds
# The device tool ends a command after 10 minutes: every part has a timeout, and the
# benchmark gets what is left of BUDGET_S (default 540 s) after the tests. The whole
# benchmark (both models) takes ~5-6 minutes and a task has 15 minutes of device time
# in all (start-up included), so a first call is best BENCH_ARGS="--only gpt2", and a
# second, only if 6 minutes are left, NO_TESTS=1 BUDGET_S=300 BENCH_ARGS="--only llama"
# (or, with ~5 minutes, NO_TESTS=1 NO_BENCH=1 SANITIZE=1: races and bad accesses that
# the host emulation cannot show).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-}

if [ "$mode" = prepare ]; then
    set -e
    [ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
    if [ ! -f build-gpu/build.ninja ]; then
        meson setup build-gpu --buildtype=release -Dcuda=enabled \
            -Dgpu_arch="${GPU_ARCH:-90}" -Dcpu_arch=x86-64-v3 >/dev/null
    fi
    ninja -C build-gpu anvil tests/gpu/test_gpu_ops tests/gpu/test_nccl \
        tests/gpu/test_ptx_layouts tests/gpu/att_bench tests/unit/test_cuda_lt_load >/dev/null
    rm -rf bundle build-gpu/bundle
    bash ../shared/tools/bundle-libs.sh build-gpu/bundle build-gpu/anvil \
        build-gpu/tests/gpu/test_gpu_ops build-gpu/tests/gpu/test_nccl \
        build-gpu/tests/gpu/test_ptx_layouts build-gpu/tests/gpu/att_bench \
        build-gpu/tests/unit/test_cuda_lt_load >/dev/null
    # ~95 MB (OpenBLAS alone is 36), ~19 MB as xz: what travels is the archive
    mkdir -p bundle
    tar -cJf bundle/gpu.tar.xz -C build-gpu/bundle .
    du -sh bundle/gpu.tar.xz
    exit 0
fi
if [ "$mode" != run ]; then
    echo "usage: $0 prepare|run" >&2
    exit 2
fi

out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
gb=/tmp/anvil-gpu-bundle
rm -rf "$gb" && mkdir -p "$gb" && tar -xJf bundle/gpu.tar.xz -C "$gb"
# shellcheck disable=SC1091
source "$gb/env.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    > "$out/summary.txt" 2>&1
# CUDA's own libraries (cudart, NCCL, and cuBLASLt, which anvil opens with dlopen) come
# from the machine, not the bundle: the loader's paths and /usr/local/cuda, else the
# pip wheels PyTorch brought (site-packages/nvidia/.../lib). libs.txt says what resolved.
cuda_libs_found() {
    ! { ldd "$gb/bin/anvil"; ldd "$gb/bin/test_gpu_ops"; } 2>&1 | grep -q 'not found' &&
        { ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so\.13' ||
          ls /usr/local/cuda/lib64/libcublasLt.so.13 >/dev/null 2>&1 ||
          ( IFS=:; for d in ${LD_LIBRARY_PATH:-}; do [ -e "$d/libcublasLt.so.13" ] && exit 0; done
            exit 1 ); }
}
if ! cuda_libs_found; then
    wheel_libs=$(python3 -c '
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for f in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))' 2>/dev/null || true)
    if [ -n "$wheel_libs" ]; then
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$wheel_libs"
        echo "CUDA libraries from the pip wheels: $wheel_libs" >> "$out/summary.txt"
    fi
fi
{ echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldd "$gb/bin/anvil"; ldconfig -p 2>/dev/null |
    grep -E 'libcublasLt|libcudart|libnccl'; } > "$out/libs.txt" 2>&1
part() {   # part NAME COMMAND...: run, log, note the exit code and time
    local name=$1 t0 rc
    shift
    t0=$(date +%s)
    "$@" > "$out/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - t0 )) s" >> "$out/summary.txt"
    tail -3 "$out/$name.log" | sed "s/^/  $name | /" >> "$out/summary.txt"
}
t_start=$(date +%s)
# cuBLASLt opens (dlopen), anvil's start loads none (0.2 s): tests/unit/test_cuda_lt_load.c
part lt_load timeout 30 "$gb/bin/test_cuda_lt_load" "$gb/bin/anvil"
if [ "${NO_TESTS:-0}" != 1 ]; then
    part ptx timeout 30 "$gb/bin/test_ptx_layouts"
    part gpu_ops timeout 180 "$gb/bin/test_gpu_ops"
    part nccl timeout 60 "$gb/bin/mpirun" -n 1 "$gb/bin/test_nccl"
    part model timeout 240 python3 tests/gpu/test_model_gpu.py "$gb/bin/anvil"
fi
if [ "${SANITIZE:-0}" = 1 ]; then
    san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    part memcheck timeout 150 "$san" --tool memcheck --leak-check no --error-exitcode 9 \
        "$gb/bin/test_gpu_ops"
    part racecheck timeout 150 env GPU_OPS_ONLY=norm,attention,crossentropy \
        "$san" --tool racecheck --error-exitcode 9 "$gb/bin/test_gpu_ops"
fi
if [ "${NO_BENCH:-0}" != 1 ]; then
    # PyTorch's flash / cuDNN / memory-efficient attention at the benchmark's shapes, to
    # hold against the attention rows of anvil's profile below (~20 s)
    part sdpa timeout 120 python3 tests/bench/sdpa_bench.py --device cuda
    # anvil's attention kernels at the same shapes, forward with 128- and 64-row query
    # blocks, in the same FLOP convention (tests/bench/att_bench.c, ~10 s)
    part att timeout 90 "$gb/bin/att_bench"
    # PyTorch's matmuls at every matmul shape of both models, in the profile's rows, to
    # hold against anvil's matmul rows (tests/bench/mm_bench.py, ~15 s)
    part mm timeout 120 python3 tests/bench/mm_bench.py --device cuda
fi
left=$(( ${BUDGET_S:-540} - ($(date +%s) - t_start) ))
if [ "${NO_BENCH:-0}" != 1 ] && [ "$left" -gt 60 ]; then
    # shellcheck disable=SC2086
    part bench timeout "$left" env ANVIL="$gb/bin/anvil" OUT="$out" \
        bash tests/bench/gpu_bench.sh ${BENCH_ARGS:-}
fi
# the GPU and the driver / runtime / cuBLASLt / NCCL versions anvil ran with, any
# epilogue cuBLASLt refused (said once per run) and what timing its candidate
# algorithms found (train.matmul_algo), for the figures in docs/perf.md
for f in "$out"/gpu_bench/*.anvil.log; do
    if [ -f "$f" ]; then
        grep -h -m1 '^device (rank 0): ' "$f" >> "$out/summary.txt" || true
        grep -h 'cuBLASLt has no algorithm' "$f" >> "$out/summary.txt" || true
        grep -h 'matmul algorithms timed' "$f" >> "$out/summary.txt" || true
    fi
done
cat "$out/summary.txt"
if [ -f "$out/sdpa.log" ]; then cat "$out/sdpa.log"; fi
if [ -f "$out/att.log" ]; then cat "$out/att.log"; fi
if [ -f "$out/mm.log" ]; then cat "$out/mm.log"; fi
# anvil's per-op tables (run.profile_step) from the benchmark, into the output's tail
for f in "$out"/gpu_bench/*.anvil.log; do
    if [ -f "$f" ]; then grep -A 40 "^profile of step" "$f" | head -40 || true; fi
done
