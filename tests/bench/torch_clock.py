"""tests/bench/torch_clock.py: the timer the PyTorch micro-benchmarks share
(sdpa_bench.py, mm_bench.py), imported from their own folder."""
import time

import torch


def clock(dev, fn, warmup, iters):
    """Milliseconds per call of fn: CUDA events on a GPU, the wall clock on the cpu."""
    for _ in range(warmup):
        fn()
    if dev == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters
