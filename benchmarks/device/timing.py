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


# kernel-name substrings -> category, first match wins (CUDA kernel names from cuBLAS/cuDNN/ATen/flash)
KERNEL_CATEGORIES = (
    ("attention (flash/SDPA)", ("flash", "fmha", "attention", "cudnn_sdpa")),
    ("matmul (GEMM)", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_", "ampere_", "hopper")),
    ("depthwise conv3d", ("conv", "depthwise", "implicit", "winograd", "cudnn")),
    ("layernorm", ("layer_norm", "layernorm")),
    ("softmax", ("softmax",)),
    ("pooling", ("max_pool", "avg_pool", "pool")),
    ("copy / cat / layout", ("cat", "copy", "transpose", "permute", "contiguous")),
    ("reduction", ("reduce",)),
    ("indexing / gather", ("index", "gather", "scatter")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "pointwise", "triton")),
)


def kernel_category(name: str) -> str:
    low = name.lower()
    for cat, keys in KERNEL_CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def kernel_breakdown(fn: Callable[[], object], iters: int = 3) -> dict:
    """Device kernel time of ``fn`` per category (ms per call) and the top kernels, via torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    cats: dict[str, float] = {}
    kernels: list[tuple[str, float]] = []
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", None)
        if us is None:
            us = getattr(evt, "self_cuda_time_total", 0.0)
        if not us or "CUDA" not in str(getattr(evt, "device_type", "CUDA")):
            continue  # host-side events: their kernels are counted as their own CUDA events
        ms = us / 1e3 / iters
        cats[kernel_category(evt.key)] = cats.get(kernel_category(evt.key), 0.0) + ms
        kernels.append((evt.key, ms))
    total = sum(cats.values())
    kernels.sort(key=lambda kv: -kv[1])
    return {"total_ms": total, "categories": {k: {"ms": v, "share": v / total if total else 0.0}
                                              for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": n[:120], "ms": m} for n, m in kernels[:12]]}


def graph_of(fn):
    """(replay, output) of fn captured as a CUDA graph after warm-up on a side stream."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g.replay, out
