"""Timing helpers shared by the device scripts: CUDA events on the GPU, perf_counter on the CPU."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def quantiles(xs: list[float]) -> dict[str, float]:
    """median, p10, p90 (nearest rank) and n of a list of milliseconds."""
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]  # noqa: E731
    return {"median": statistics.median(xs), "p10": q(0.1), "p90": q(0.9), "n": len(xs)}


def time_calls(fn: Callable[[], object], iters: int, warmup: int, cuda: bool, wall: bool = False) -> dict[str, float]:
    """Per-call ms of ``fn`` after ``warmup`` calls: CUDA events around each call on the GPU
    (``wall``: host clock with a sync instead, which includes host work), perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if cuda and not wall:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(1e3 * (time.perf_counter() - t0))
    return quantiles(times)
